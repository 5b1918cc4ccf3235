"""The one module that renders templates: ``templates/email/<intent>.{subject,txt,html}.j2``.

HTML is autoescaped, every template is StrictUndefined (a missing variable is an error, not
an empty string), and an operator's templates folder (``RENEWDESK_TEMPLATES_DIR``) overrides
ours file by file.
"""
from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import jinja2
import markupsafe

from handlers.settings import Settings

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    text: str
    html: str


@functools.lru_cache(maxsize=8)
def environment(operator_dir: str | None = None) -> jinja2.Environment:
    """A jinja2 environment: operator's folder first, then ours."""
    loaders: list[jinja2.BaseLoader] = []
    if operator_dir:
        # the folder as ours is laid out (email/x.txt.j2), or flat (x.txt.j2), as the README describes
        loaders.append(jinja2.FileSystemLoader(operator_dir))
        loaders.append(jinja2.PrefixLoader({"email": jinja2.FileSystemLoader(operator_dir)}, delimiter="/"))
    loaders.append(jinja2.FileSystemLoader(str(TEMPLATES)))
    env = jinja2.Environment(
        loader=jinja2.ChoiceLoader(loaders),
        undefined=jinja2.StrictUndefined,
        autoescape=jinja2.select_autoescape(enabled_extensions=("html", "html.j2"), default_for_string=False),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["money"] = _money
    env.filters["nl2br"] = _nl2br
    return env


def _nl2br(text: str) -> markupsafe.Markup:
    """Escape ``text``, then keep its line breaks as ``<br>`` (escaping leaves newlines alone, so
    the whole text is escaped at once: a join of escaped lines cost half of an acknowledgement's HTML)."""
    return markupsafe.Markup(str(markupsafe.escape(str(text))).replace("\n", "<br>\n"))


def _money(minor: int, currency: str) -> str:
    from handlers.money import fmt
    return fmt(minor, currency)


def render_email(settings: Settings, intent: str, context: dict[str, Any]) -> RenderedEmail:
    """Render the three parts of email ``intent`` with ``context`` plus the common variables."""
    return email_renderer(settings, intent)(context)


def email_renderer(settings: Settings, intent: str) -> Callable[[dict[str, Any]], RenderedEmail]:
    """:func:`render_email` for many mails of one intent: its three templates are looked up once."""
    common = {"business_name": settings.business_name, "public_url": settings.public_url.rstrip("/"),
              "mail_domain": settings.mail_domain}
    subject_t, text_t, html_t = _email_templates(environment(settings.templates_dir), intent)

    def render(context: dict[str, Any]) -> RenderedEmail:
        ctx = {**common, **context}
        # the subject on one line, whatever the template or its input did
        return RenderedEmail(" ".join(subject_t.render(ctx).split()), text_t.render(ctx), html_t.render(ctx))
    return render


# A lookup asks the loader whether each file changed: a ``stat`` per part, three per mail, which
# was a tenth of queuing an acknowledgement. Found templates are reused for a second, so an
# operator's edited template is still picked up at once, as far as anyone can tell.
LOOKUP_REUSE_SECONDS = 1.0
_found: dict[tuple[jinja2.Environment, str], tuple[float, tuple[jinja2.Template, ...]]] = {}


def _email_templates(env: jinja2.Environment, intent: str) -> tuple[jinja2.Template, ...]:
    now, key = time.monotonic(), (env, intent)
    hit = _found.get(key)
    if hit is not None and now - hit[0] < LOOKUP_REUSE_SECONDS:
        return hit[1]
    subject, text, html = (env.get_template(f"email/{intent}.{part}.j2") for part in ("subject", "txt", "html"))
    if _operators(text) and not _operators(html):
        # the operator rewrote the text but not the HTML, which most mail readers show: the HTML
        # part is the operator's text, escaped, so the mail says what the operator wrote
        html = env.from_string('{% extends "email/_layout.html.j2" %}{% block body %}<p>{{ _text | nl2br }}</p>'
                               '{% endblock %}')
        html = _TextAsHtml(text, html)
    templates = (subject, text, html)
    _found[key] = (now, templates)
    return templates


def _operators(template: Any) -> bool:
    """Whether a template came from the operator's folder rather than ours."""
    filename = getattr(template, "filename", None)
    return bool(filename) and not Path(filename).resolve().is_relative_to(TEMPLATES)


class _TextAsHtml:
    """An HTML part rendered from the operator's text part inside our layout."""

    def __init__(self, text: jinja2.Template, layout: jinja2.Template):
        self.text, self.layout = text, layout

    def render(self, ctx: dict[str, Any]) -> str:
        return self.layout.render({**ctx, "_text": self.text.render(ctx)})


def render_web(settings: Settings, name: str, context: dict[str, Any]) -> str:
    """Render ``templates/web/<name>.html.j2`` (autoescaped)."""
    ctx = {"business_name": settings.business_name, "public_url": settings.public_url.rstrip("/"), **context}
    return environment(settings.templates_dir).get_template(f"web/{name}.html.j2").render(ctx)
