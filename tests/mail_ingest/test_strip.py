"""Reply stripping, measured against real mail (the shared corpora) and against known traps.

The corpora live in ``../shared/corpus`` (see each corpus' SOURCE.md); the corpus tests are
skipped with a reason when it is missing.
"""
from __future__ import annotations

import email
import json
import re
from email import policy
from pathlib import Path

import pytest

from mail_ingest.html_text import QUOTE_MARKER, html_to_text
from mail_ingest.strip import is_quote_marker, strip_html_reply, strip_reply

from tests.support.corpus import CORPUS
TALON = CORPUS / "talon" / "tests" / "fixtures"
CRISP = CORPUS / "crisp-email-reply-parser"
STRIPPED_CHECKS = (
    "first_fragment_trimmed_equals",
    "first_fragment_equals",
    "visible_text_equals",
    "visible_text_trimmed_equals",
)
HTML_REPLY = "Hi. I am fine.\n\nThanks,\nAlex"

needs_talon = pytest.mark.skipif(not TALON.is_dir(), reason=f"talon corpus not found at {TALON}")
needs_crisp = pytest.mark.skipif(
    not (CRISP / "expected.json").is_file(), reason=f"crisp corpus not found at {CRISP}"
)


def _first_plain_part(path: Path) -> str:
    message = email.message_from_bytes(path.read_bytes(), policy=policy.default)
    for part in message.walk():
        if part.get_content_type() == "text/plain":
            return part.get_content()
    raise AssertionError(f"{path.name} has no text/plain part")


def _talon_standard() -> list[tuple[str, str, str]]:
    """(name, text/plain body, expected reply) for each standard reply."""
    cases = []
    for eml in sorted((TALON / "standard_replies").glob("*.eml")):
        expected_file = eml.with_name(f"{eml.stem}_reply_text")
        expected = expected_file.read_text(encoding="utf-8") if expected_file.exists() else "Hello"
        cases.append((eml.name, _first_plain_part(eml), expected.rstrip("\n")))
    return cases


def _all_fixture_files() -> list[Path]:
    files: list[Path] = []
    if TALON.is_dir():
        files += sorted(p for p in TALON.rglob("*") if p.is_file())
    if (CRISP / "test" / "fixtures").is_dir():
        files += sorted((CRISP / "test" / "fixtures").glob("*"))
    return files


# -- talon -------------------------------------------------------------------------------------


@needs_talon
def test_talon_standard_replies_give_exactly_their_expected_text():
    """All 12 standard replies (first text/plain part) strip to exactly their expected text:
    the file <name>_reply_text where it exists (iphone, sparrow), else "Hello". These
    expectations cut the quotation only, so "Sent from my iPhone" and Sparrow's "-- " signature
    stay: this is strip_reply(keep_signature=True)."""
    cases = _talon_standard()
    failures = [
        (name, got, expected)
        for name, body, expected in cases
        if (got := strip_reply(body, keep_signature=True)) != expected
    ]
    assert len(cases) == 12
    assert not failures, "\n".join(f"{n}: got {g!r}, expected {e!r}" for n, g, e in failures)
    assert len(cases) - len(failures) == 12


@needs_talon
def test_talon_standard_replies_without_signatures_are_hello():
    """With signatures cut too (the default), every one of the 12 is just "Hello"."""
    cases = _talon_standard()
    got = {name: strip_reply(body) for name, body, _ in cases}
    assert got == {name: "Hello" for name, _, _ in cases}


@needs_talon
def test_talon_html_replies_give_the_expected_text_ignoring_whitespace():
    """All 9 HTML replies (Gmail, Hotmail, Mail.ru, Outlook 2003/2007/2010, Thunderbird,
    Windows Mail, Yandex) strip to "Hi. I am fine. Thanks, Alex" ignoring whitespace."""
    files = sorted((TALON / "html_replies").glob("*.html"))
    want = re.sub(r"\s+", "", HTML_REPLY)
    failures = {}
    for path in files:
        got = strip_html_reply(path.read_text(encoding="utf-8"))
        if re.sub(r"\s+", "", got) != want:
            failures[path.name] = got
    assert len(files) == 9
    assert not failures, failures
    assert len(files) - len(failures) == 9


@needs_talon
@pytest.mark.parametrize(
    "name, reply",
    [("OLK_SRC_BODY_SECTION.html", "Reply"), ("reply-separated-by-hr.html", "Hi\nthere\nBob")],
)
def test_talon_outlook_boundaries_keep_the_reply_only(name, reply):
    """Outlook for Mac's OLK_SRC_BODY_SECTION and a reply separated from the quote by <hr>:
    the reply stays, the quote goes."""
    assert strip_html_reply((TALON / name).read_text(encoding="utf-8")) == reply


@needs_talon
def test_talon_reply_sharing_a_block_with_its_quote():
    """Yahoo's "--- On <date>, <addr> wrote:" sits in the same block as the reply: both the
    text and the HTML part keep the reply and lose the quoted booking inquiry."""
    message = email.message_from_bytes(
        (TALON / "reply-quotations-share-block.eml").read_bytes(), policy=policy.default
    )
    plain = next(p for p in message.walk() if p.get_content_type() == "text/plain")
    html = next(p for p in message.walk() if p.get_content_type() == "text/html")
    for got in (strip_reply(plain.get_content()), strip_html_reply(html.get_content())):
        assert got.startswith("Hi Katharine.")
        assert "wrote" not in got and "Booking Inquiry" not in got


# -- crisp -------------------------------------------------------------------------------------


@needs_crisp
def test_crisp_share_of_stripped_replies(capsys):
    """For every expected.json check that states the stripped reply (first fragment or visible
    text), strip_reply(fixture) equals it, both whitespace-trimmed, in at least 95% of them.
    The share is printed; failures are listed when the share is too low."""
    data = json.loads((CRISP / "expected.json").read_text(encoding="utf-8"))
    total, failures = 0, []
    for case in data["cases"]:
        fixture = CRISP / "test" / "fixtures" / case["fixture"]
        for check in case["checks"]:
            if check["check"] not in STRIPPED_CHECKS:
                continue
            total += 1
            got = strip_reply(fixture.read_text(encoding="utf-8"))
            if got.strip() != check["expected"].strip():
                failures.append((case["fixture"], check["check"], got, check["expected"]))
    share = (total - len(failures)) / total
    with capsys.disabled():
        print(f"\ncrisp: {total - len(failures)}/{total} stripped replies match ({share:.1%})")
        for fixture, kind, _, _ in failures:
            print(f"  not matching: {fixture} ({kind})")
    assert total == 52
    assert share >= 0.95, "\n\n".join(
        f"{f} [{k}]\n--- got\n{g.strip()}\n--- expected\n{e.strip()}" for f, k, g, e in failures
    )


# -- every fixture -----------------------------------------------------------------------------


@pytest.mark.skipif(not _all_fixture_files(), reason=f"no corpus found under {CORPUS}")
@pytest.mark.parametrize("path", _all_fixture_files(), ids=lambda p: str(p.relative_to(CORPUS)))
def test_every_fixture_file_runs_without_raising(path):
    """Every file of both corpora goes through html_to_text, strip_reply (both modes) and
    strip_html_reply without raising; .eml files also part by part."""
    raw = path.read_bytes()
    text = raw.decode("utf-8", errors="replace")
    bodies = [text]
    if path.suffix == ".eml" or path.name.endswith("_R_S"):
        message = email.message_from_bytes(raw, policy=policy.default)
        for part in message.walk():
            if part.get_content_maintype() == "text":
                bodies.append(part.get_content())
    for body in bodies:
        assert isinstance(strip_reply(body), str)
        assert isinstance(strip_reply(body, keep_signature=True), str)
        assert isinstance(strip_html_reply(body), str)
        assert isinstance(html_to_text(body), str)


# -- languages not in the corpora --------------------------------------------------------------


@pytest.mark.parametrize(
    "mail",
    [
        # Spanish, Gmail and Outlook
        "Listo.\n\nEl lun, 15 ene 2024 a las 14:30, Juan Pérez (<juan@example.es>) escribió:\n> ¿Puede?\n",
        "Listo.\n\nDe: Juan <juan@example.es>\nEnviado: lunes, 15 de enero de 2024 14:30\n"
        "Para: soporte@example.com\nAsunto: Renovación\n\nTexto anterior",
        # Japanese: Gmail, Apple Mail, Thunderbird, Outlook
        "Listo.\n\n2024年1月15日(月) 14:30 山田太郎 <taro@example.jp>:\n\n> 更新について\n",
        "Listo.\n\n2024/01/15 14:30、山田太郎 <taro@example.jp>のメール：\n\n> 更新について\n",
        "Listo.\n\n2024/01/15 14:30 に 山田太郎 さんは書きました:\n> 更新について\n",
        "Listo.\n\n差出人: 山田太郎 <taro@example.jp>\n送信日時: 2024年1月15日 14:30\n"
        "宛先: support@example.com\n件名: Re: 更新について\n\n古い本文",
        # German "hat ... geschrieben", Polish "pisze", Swedish "Den ... skrev"
        "Listo.\n\nAm 15.01.2024 um 14:30 hat Hans Müller <hans@example.de> geschrieben:\n\nAlt",
        "Listo.\n\nW dniu 15.01.2024 o 14:30, Jan Kowalski pisze:\n> Pytanie\n",
        "Listo.\n\nDen 15 jan. 2024 kl. 14:30 skrev Anna <anna@example.se>:\n> Fråga\n",
        # Brazilian Portuguese and Italian Gmail, French Gmail
        "Listo.\n\nEm seg., 15 de jan. de 2024 às 14:30, Maria <maria@example.br> escreveu:\n\n> P\n",
        "Listo.\n\nIl giorno lun 15 gen 2024 alle ore 14:30 Mario <mario@example.it> ha scritto:\n\n> D\n",
        "Listo.\n\nLe lun. 15 janv. 2024 à 14:30, Pierre <pierre@example.fr> a écrit :\n\n> Q\n",
        # a bare "<name> wrote:" right above a quote
        "Listo.\n\nBob Smith wrote:\n> old\n",
        # mobile signatures in other languages, and Outlook for Android above its header block
        "Listo.\n\nVon meinem iPhone gesendet\n\nAm 15.01.2024 um 14:30 schrieb S <s@example.com>:\n\n> Alt\n",
        "Listo.\n\nGet Outlook for Android<https://aka.ms/ghei36>\n________________________________\n"
        "From: Support <support@example.com>\nSent: Monday\nTo: me\nSubject: Re: x\n\nold",
        "Listo.\n\nSent from my Samsung Galaxy smartphone.\n\n-------- Original message --------\nFrom: x\n",
        # the HTML converter's marker
        f"Listo.\n\n{QUOTE_MARKER}\nanything at all",
    ],
)
def test_localized_and_client_specific_quotes_are_cut(mail):
    """Attributions, header blocks and mobile signatures of clients and languages beyond the
    corpora (Spanish, Japanese, Polish "pisze", Swedish, Brazilian Portuguese, ...) are cut."""
    assert strip_reply(mail) == "Listo."


# -- traps: keep the text ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "mail",
    [
        "On Monday I renewed the domain.\nOn reflection it worked.",
        "Read https://example.com/on-monday-bob-wrote: it explains the wrote: pattern.",
        "From: the billing page I see two charges.\nTo: be honest I'm confused.\nSubject: to it, I pay.",
        "Kind regards to the team, you were great.\nWith regards to the invoice, it is paid.",
        "Plan:\n\n---\n\n- one\n- two\n\n----\n\n====\n\nThat's it",
        "Here:\n```\n> not a quote\nOn Mon, 1 Jan 2024, Bob <b@x.com> wrote:\n--\nSent from my iPhone\n```\nDone.",
        "I'm writing because of:\n-- first point\n-- second point\n\nThanks!",
        "Here is another email\n\nSent from my desk, is much easier than my phone.",
        "Dates: 2024-01-15 14:30\n15.01.2024 14:30\nJan 15, 2024 at 14:30\nNone of these is a header.",
    ],
)
def test_false_positive_traps_keep_the_whole_text(mail):
    """A sentence starting with "On", "wrote:" in a URL, "From:" in the body, "regards" in a
    sentence, Markdown rules, code blocks, "--" list items, "Sent from my desk, ..." and bare
    timestamps are the reply itself: nothing is cut."""
    assert strip_reply(mail) == mail


def test_inline_replies_keep_the_answers_between_quotes():
    """Text written between quoted parts stays, the quotes and their attribution go."""
    mail = (
        "On Dec 15, 2024, at 2:00 PM, Jane <jane@example.com> wrote:\n> Option A?\n\nYes, A.\n\n"
        "> Option B?\n\nNo, B has drawbacks.\n"
    )
    assert strip_reply(mail) == "Yes, A.\n\nNo, B has drawbacks."


def test_a_quote_wrapped_without_prefix_stays_one_quote():
    """A long quoted line wrapped by the client without ">" on the next line is still quote."""
    mail = (
        "New text.\n\nOn Mon, 15 Jan 2024 at 14:30, Bob <b@example.com> wrote:\n"
        "> This is a long quoted line that the client wrapped in the middle of a\n"
        "word later\n> and the quote goes on.\n"
    )
    assert strip_reply(mail) == "New text."


def test_forwards_are_content_not_quotes():
    """A forwarded message (a "Forwarded message" line, or a header block with an FW: subject)
    is what the customer sends us: it is kept."""
    gmail = (
        "FYI see below\n\n---------- Forwarded message ---------\nFrom: A <a@example.com>\n"
        "Date: Mon, Jan 15, 2024\nSubject: Invoice\nTo: B <b@example.com>\n\nInvoice body"
    )
    outlook = (
        "FYI\n\n________________________________\nFrom: A <a@example.com>\n"
        "Sent: Monday, January 15, 2024 2:30 PM\nTo: B\nSubject: FW: Invoice\n\nInvoice body"
    )
    assert strip_reply(gmail) == gmail
    assert strip_reply(outlook) == outlook


def test_signatures_are_cut_unless_kept():
    """"-- ", "Sent from my iPhone" and a closing "Regards," with a short name block are cut by
    default and all kept with keep_signature=True."""
    mail = "Please renew.\n\nRegards,\nJane Doe\nACME Ltd\n\n-- \nACME Ltd, 1 Main St\n"
    assert strip_reply(mail) == "Please renew."
    assert strip_reply(mail, keep_signature=True) == mail.rstrip("\n")
    assert strip_reply("Yes.\n\nSent from my iPad") == "Yes."


def test_nothing_left_means_keep_everything():
    """When stripping would leave nothing (a message that is only a quote), the whole text is
    kept: when unsure, keep."""
    assert strip_reply("> only\n> a quote\n") == "> only\n> a quote"
    assert strip_reply("") == ""
    assert strip_reply("\n\n  \n") == ""


def test_line_endings_and_tidying():
    """CRLF and CR are read as newlines; leading blank lines, trailing rules and runs of blank
    lines are tidied."""
    assert strip_reply("\r\n\r\nHello\r\n\r\n\r\n\r\nWorld\r\n----\r\n") == "Hello\n\nWorld"


def test_strip_html_reply_converts_then_strips():
    """strip_html_reply is strip_reply on html_to_text: Gmail's quote and an Outlook
    divRplyFwdMsg container are cut, the reply stays."""
    gmail = (
        '<div dir="ltr">Sounds good</div><br><div class="gmail_quote"><div class="gmail_attr">'
        "Am Mo., 15. Jan. 2024 um 14:30 Uhr schrieb X &lt;x@example.de&gt;:<br></div>"
        '<blockquote class="gmail_quote">alt</blockquote></div>'
    )
    outlook = (
        '<div>Sounds good</div><div id="appendonsend"></div><hr style="display:inline-block">'
        '<div id="divRplyFwdMsg"><b>Von:</b> X<br><b>Gesendet:</b> Montag<br></div><div>alt</div>'
    )
    assert strip_html_reply(gmail) == "Sounds good"
    assert strip_html_reply(outlook) == "Sounds good"


@pytest.mark.parametrize(
    "line, expected",
    [
        ("-----Original Message-----", True),
        ("----- Ursprüngliche Nachricht -----", True),
        ("-------- Message d'origine --------", True),
        (QUOTE_MARKER, True),
        ("## Please reply above this line ##", True),
        ("The original message was lost.", False),
        ("----", False),
    ],
)
def test_is_quote_marker(line, expected):
    """is_quote_marker recognises the lines that alone start quoted history, and only those."""
    assert is_quote_marker(line) is expected
