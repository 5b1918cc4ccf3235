"""Queueing outgoing mail: same transaction as the cause, exactly-once keys, safe headers, templates."""
import email
import email.policy
import os

import jinja2
import pytest
from sqlalchemy import func, select

from handlers import render
from handlers.errors import InvalidInput
from handlers.models import AuditEvent, OutboundMail
from handlers.outbox import LOOP_HEADER, Mail, Recipient, queue_email, queue_many

CTX = {"subject": "Your renewal", "body": "Hello <b>world</b>\nsecond line", "recipient_name": "Ann"}


def _queue(tx, **kw):
    kw.setdefault("to", [Recipient("ann@acme.test", "Ann Owner")])
    return queue_email(tx, "staff_message", dict(CTX), **kw)


def _parsed(row):
    return email.message_from_bytes(row.raw, policy=email.policy.default)


def test_mail_is_queued_only_if_its_transaction_commits(services):
    """State and its email move together: a failing operation leaves no mail behind."""
    def failing(tx):
        _queue(tx)
        raise RuntimeError("the state change failed")
    with pytest.raises(RuntimeError):
        services.run(failing)
    services.run(_queue)
    with services.db.transaction(readonly=True) as s:
        assert s.scalar(select(func.count()).select_from(OutboundMail)) == 1
        assert s.scalars(select(AuditEvent.action)).all() == ["email.queue"]


def test_every_mail_carries_our_identity_and_loop_headers(services):
    """Message-ID from our domain, RFC 3834 Auto-Submitted, our loop header, text + HTML parts."""
    row = services.run(_queue)
    msg = _parsed(row)
    assert msg["Message-ID"].endswith("@desk.example.test>") and msg["Message-ID"] == row.message_id
    assert msg["Auto-Submitted"] == "auto-generated"
    assert msg[LOOP_HEADER] == "desk.example.test"
    assert msg["From"].addresses[0].addr_spec == "support@desk.example.test"
    assert row.mail_from == "bounces@desk.example.test"
    assert msg.get_content_type() == "multipart/alternative"
    text, html = (p.get_content() for p in msg.iter_parts())
    assert "Hello <b>world</b>" in text                      # plain text is left as written
    assert "Hello &lt;b&gt;world&lt;/b&gt;<br>" in html      # HTML is escaped, line breaks kept
    assert "<b>world" not in html


def test_header_injection_through_subject_or_name_adds_no_header(services):
    """A CR/LF in a subject or a contact name cannot smuggle a header into the mail."""
    def op(tx):
        return queue_email(tx, "staff_message", {**CTX, "subject": "Hi\r\nBcc: victim@evil.test"},
                           to=[Recipient("ann@acme.test", "Ann\r\nX-Evil: 1")])
    row = services.run(op)
    msg = _parsed(row)
    assert msg["Bcc"] is None and msg["X-Evil"] is None
    assert msg["Subject"] == "Hi Bcc: victim@evil.test"
    headers = row.raw.split(b"\r\n\r\n", 1)[0]
    assert b"\r\nBcc:" not in headers and b"\r\nX-Evil" not in headers
    assert row.recipients == ["ann@acme.test"]


def test_dedupe_key_makes_a_mail_exactly_once(services):
    """Queueing the same key twice (a re-run) yields the first row, not a second mail."""
    first = services.run(_queue, dedupe_key="notice:1:ann@acme.test")
    second = services.run(_queue, dedupe_key="notice:1:ann@acme.test")
    assert first.id == second.id
    with services.db.transaction(readonly=True) as s:
        assert s.scalar(select(func.count()).select_from(OutboundMail)) == 1


def test_missing_template_variable_is_an_error_not_blank(services):
    """StrictUndefined: a template that needs a value it was not given fails loudly."""
    def op(tx):
        return queue_email(tx, "staff_message", {"subject": "x"}, to=["ann@acme.test"])
    with pytest.raises(jinja2.UndefinedError):
        services.run(op)


def test_operator_templates_override_ours_file_by_file(services, tmp_path):
    """An operator's folder replaces just the files it has; the rest come from ours."""
    (tmp_path / "email").mkdir()
    (tmp_path / "email" / "staff_message.subject.j2").write_text("[Custom] {{ subject }}")
    services.settings = services.settings.replace(templates_dir=str(tmp_path))
    try:
        msg = _parsed(services.run(_queue))
    finally:
        render.environment.cache_clear()
    assert msg["Subject"] == "[Custom] Your renewal"
    assert "Hello Ann" in msg.get_body(("plain",)).get_content()   # ours, not overridden


def test_an_operators_flat_folder_is_used_and_a_text_override_reaches_the_html_part(services, tmp_path):
    """A file placed flat in the folder (as the README says) overrides ours, like one under email/; a
    rewritten text part with no HTML of the operator's makes the HTML part too, where our default
    HTML used to be sent beside it."""
    (tmp_path / "staff_message.txt.j2").write_text("Dear {{ recipient_name }}, <our> own words.")
    services.settings = services.settings.replace(templates_dir=str(tmp_path))
    try:
        msg = _parsed(services.run(_queue))
    finally:
        render.environment.cache_clear()
    assert msg.get_body(("plain",)).get_content().strip() == "Dear Ann, <our> own words."
    html = msg.get_body(("html",)).get_content()
    assert "Dear Ann, &lt;our&gt; own words." in html and "Hello Ann" not in html


def test_an_operators_edited_template_is_used_once_the_reuse_window_has_passed(services, tmp_path, monkeypatch):
    """Template lookups are reused for LOOKUP_REUSE_SECONDS (each asks the disk whether the file
    changed); an operator's edit is picked up after that, and not before."""
    (tmp_path / "email").mkdir()
    subject = tmp_path / "email" / "staff_message.subject.j2"
    subject.write_text("[Old] {{ subject }}")
    services.settings = services.settings.replace(templates_dir=str(tmp_path))
    now = [1000.0]
    monkeypatch.setattr(render.time, "monotonic", lambda: now[0])
    try:
        assert _parsed(services.run(_queue))["Subject"] == "[Old] Your renewal"
        subject.write_text("[New] {{ subject }}")
        later = subject.stat().st_mtime + 5  # a later mtime, whatever the file system's resolution
        os.utime(subject, (later, later))
        now[0] += render.LOOKUP_REUSE_SECONDS / 2
        assert _parsed(services.run(_queue))["Subject"] == "[Old] Your renewal"
        now[0] += render.LOOKUP_REUSE_SECONDS
        assert _parsed(services.run(_queue))["Subject"] == "[New] Your renewal"
    finally:
        render.environment.cache_clear()


def test_non_ascii_names_subjects_and_bodies_read_back_exactly(services):
    """Names with specials or non-ASCII, an accented subject and long accented lines survive the
    trip through the message's bytes as any mail reader parses them; no line is over 998 octets."""
    body = "Grüße aus Zürich — " * 40 + "\nŁukasz's second line\n"

    def op(tx):
        return queue_email(tx, "staff_message", {**CTX, "subject": "Ihre Domain läuft ab — bitte prüfen",
                                                 "body": body},
                           to=[Recipient("zoe@acme.test", "Zoë Ærø")],
                           cc=[Recipient("ops@acme.test", 'Ops, "Night" Team'), Recipient("x@acme.test")],
                           reply_to="renew+tok@desk.example.test", in_reply_to="<a@b>", references=["<a@b>"])
    row = services.run(op)
    msg = _parsed(row)
    assert msg["Subject"] == "Ihre Domain läuft ab — bitte prüfen"
    assert [(a.display_name, a.addr_spec) for a in msg["To"].addresses] == [("Zoë Ærø", "zoe@acme.test")]
    assert [(a.display_name, a.addr_spec) for a in msg["Cc"].addresses] == [
        ('Ops, "Night" Team', "ops@acme.test"), ("", "x@acme.test")]
    assert msg["Reply-To"].addresses[0].addr_spec == "renew+tok@desk.example.test"
    assert (msg["In-Reply-To"], msg["References"]) == ("<a@b>", "<a@b>")
    assert row.recipients == ["zoe@acme.test", "ops@acme.test", "x@acme.test"]
    text = msg.get_body(("plain",)).get_content()
    assert body.strip() in text.replace("\r\n", "\n")
    assert max(len(line) for line in row.raw.split(b"\r\n")) <= 998
    assert row.raw.isascii()


def test_an_address_that_is_not_one_address_is_refused(services):
    for bad in ("two@a.test, three@b.test", "no-at-sign", "a@b@c.test", "spaced out@acme.test"):
        with pytest.raises(InvalidInput, match="not an email address"):
            services.run(lambda tx: queue_email(tx, "staff_message", dict(CTX), to=[Recipient(bad)]))


def _comparable(raw):
    """A message's headers and parts, without what is unique per mail (Message-ID, boundary)."""
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    head = [(k, str(v)) for k, v in msg.items() if k not in ("Message-ID", "Content-Type")]
    return head, msg.get_body(("plain",)).get_content(), msg.get_body(("html",)).get_content()


def test_queue_many_writes_what_queue_email_writes_and_keeps_keys_exactly_once(services):
    """The batched path gives byte-for-byte the same message (but its Message-ID), an audit entry per
    mail, and honours dedupe keys: one already queued is not queued again, a key twice in one call
    queues once; the ids come back in the order asked."""
    to = [Recipient("ann@acme.test", "Ann Owner")]
    one = services.run(lambda tx: queue_email(tx, "staff_message", dict(CTX), to=to, dedupe_key="k-old",
                                              account_id=None, reply_to="renew+x@desk.example.test"))

    def op(tx):
        return queue_many(tx, "staff_message", [
            Mail(dict(CTX), to, reply_to="renew+x@desk.example.test"),
            Mail(dict(CTX), to, dedupe_key="k-old"),
            Mail(dict(CTX, recipient_name="Bob"), ["bob@acme.test"], dedupe_key="k-new"),
            Mail(dict(CTX, recipient_name="Bob"), ["bob@acme.test"], dedupe_key="k-new")])
    ids = services.run(op)
    again = services.run(lambda tx: queue_many(tx, "staff_message", [Mail(dict(CTX), to, dedupe_key="k-new")]))
    with services.db.transaction(readonly=True) as s:
        rows = {r.id: r for r in s.scalars(select(OutboundMail))}
        audited = s.execute(select(AuditEvent.subject_id, AuditEvent.detail).where(
            AuditEvent.action == "email.queue")).all()
    assert len(rows) == 3 and ids[1] == one.id and ids[2] == ids[3] == again[0] and ids[0] not in (one.id, ids[2])
    assert _comparable(rows[ids[0]].raw) == _comparable(one.raw)
    assert rows[ids[0]].subject == one.subject and rows[ids[0]].recipients == one.recipients
    assert rows[ids[2]].recipients == ["bob@acme.test"] and "Hello Bob" in _comparable(rows[ids[2]].raw)[1]
    assert sorted((int(sid), d["to"]) for sid, d in audited) == sorted(
        (r.id, r.recipients) for r in rows.values())
    with pytest.raises(InvalidInput):
        services.run(lambda tx: queue_many(tx, "staff_message", [Mail(dict(CTX), [])]))


def test_nl2br_escapes_the_text_and_keeps_each_line_break_as_br():
    """The HTML parts show a client's text as written: markup in it is escaped, and every
    newline becomes <br> plus the newline; the result is marked safe for the template."""
    from markupsafe import Markup

    from handlers.render import _nl2br
    assert _nl2br('<b>hi</b> & "you"\n\nbye\n') == ('&lt;b&gt;hi&lt;/b&gt; &amp; &#34;you&#34;<br>\n<br>\n'
                                                   'bye<br>\n')
    assert _nl2br("") == "" and isinstance(_nl2br("a"), Markup)
