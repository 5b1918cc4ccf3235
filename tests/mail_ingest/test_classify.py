"""mail_ingest.classify: the own-mail, bounce and auto-reply rules, on real mail and built mail.

No database: the rules only read the parsed message, the envelope and the settings.
"""
from __future__ import annotations

import datetime as dt
import hashlib

import pytest

from handlers.outbox import LOOP_HEADER, build_message
from handlers.settings import load_settings
from mail_ingest.classify import RULES, Envelope, Verdict, classify
from mail_ingest.parse import parse

from tests.support.corpus import CORPUS
SISIMAI = CORPUS / "sisimai-set-of-emails" / "maildir"
# bsd/ is the main set; dos/ (CRLF) and mac/ (CR) are line-ending variants, tmp/ recent additions.
# All four are read and byte-identical files are counted once, so the dos/mac copies count as
# messages of their own (they test that line endings do not change the verdict).
FOLDERS = ("bsd", "dos", "mac", "tmp")
SETTINGS = load_settings(environ={})
INBOUND = Envelope("client@example.com", "support@desk.example.test")


def envelope_of(mail) -> Envelope:
    """The envelope as the delivering MTA recorded it (Return-Path), else the From address."""
    return_path = mail.headers.get("return-path")
    mail_from = return_path.strip() if return_path is not None else (mail.from_addr or "")
    return Envelope(mail_from, "support@desk.example.test")


def sisimai(prefixes: tuple[str, ...]) -> list[tuple[str, bytes]]:
    if not SISIMAI.is_dir():
        pytest.skip(f"the sisimai corpus is not at {SISIMAI}")
    seen: set[str] = set()
    found = []
    for folder in FOLDERS:
        for path in sorted((SISIMAI / folder).glob("*.eml")):
            data = path.read_bytes()
            digest = hashlib.sha256(data).hexdigest()
            if path.name.startswith(prefixes) and digest not in seen:
                seen.add(digest)
                found.append((f"{folder}/{path.name}", data))
    return found


def kinds(files: list[tuple[str, bytes]]) -> dict[str, Verdict]:
    out = {}
    for name, data in files:
        mail = parse(data)
        out[name] = classify(mail, envelope_of(mail), SETTINGS)
    return out


def test_sisimai_bounces_are_bounces():
    """At least 99% of the lhost-*, rhost-* and rfc3464-* messages (bsd, dos, mac, tmp; exact
    duplicates once) are classified "bounce"; the share and the misses are printed."""
    verdicts = kinds(sisimai(("lhost-", "rhost-", "rfc3464-")))
    misses = sorted(name for name, v in verdicts.items() if v.kind != "bounce")
    share = 1 - len(misses) / len(verdicts)
    print(f"\nsisimai bounces: {len(verdicts) - len(misses)}/{len(verdicts)} = {share:.2%}; misses: {misses}")
    assert len(verdicts) > 600
    assert share >= 0.99, misses


def test_sisimai_bounces_name_a_recipient():
    """Most bounces yield a failed recipient and an original Message-ID (printed; at least 90% / 75%)."""
    verdicts = [v for v in kinds(sisimai(("lhost-", "rhost-", "rfc3464-"))).values() if v.kind == "bounce"]
    with_rcpt = sum(1 for v in verdicts if v.detail.get("recipients")) / len(verdicts)
    with_id = sum(1 for v in verdicts if v.detail.get("original_message_id")) / len(verdicts)
    print(f"\nbounces with a recipient: {with_rcpt:.2%}, with the original Message-ID: {with_id:.2%}")
    assert with_rcpt >= 0.90 and with_id >= 0.75


def test_sisimai_not_set_has_no_bounce():
    """None of maildir/not/ (a plain mail, a forwarded .eml, an auto-replied "bounce notification")
    is a bounce."""
    if not SISIMAI.is_dir():
        pytest.skip(f"the sisimai corpus is not at {SISIMAI}")
    files = [(p.name, p.read_bytes()) for p in sorted((SISIMAI / "not").iterdir()) if p.is_file()]
    verdicts = kinds(files)
    print("\nnot/:", {n: v.kind for n, v in verdicts.items()})
    assert len(files) == 3
    assert [n for n, v in verdicts.items() if v.kind == "bounce"] == []


def test_sisimai_rfc3834_are_auto_replies():
    """Every rfc3834-* message (vacation / out-of-office) is an auto-reply."""
    verdicts = kinds(sisimai(("rfc3834-",)))
    misses = sorted(n for n, v in verdicts.items() if v.kind != "auto_reply")
    print(f"\nrfc3834: {len(verdicts) - len(misses)}/{len(verdicts)}; misses: {misses}")
    assert verdicts and misses == []


def test_line_endings_do_not_change_the_verdict():
    """A dos/ or mac/ copy gets the same kind as its bsd/ twin."""
    if not SISIMAI.is_dir():
        pytest.skip(f"the sisimai corpus is not at {SISIMAI}")
    for folder in ("dos", "mac"):
        for path in sorted((SISIMAI / folder).glob("*.eml")):
            twin = SISIMAI / "bsd" / path.name
            if twin.is_file():
                a, b = parse(path.read_bytes()), parse(twin.read_bytes())
                assert classify(a, envelope_of(a), SETTINGS).kind == classify(b, envelope_of(b), SETTINGS).kind, path


# --- built messages ------------------------------------------------------------------------


def raw(headers: dict[str, str], body: str = "Hello,\n\nwhen does my hosting plan renew?\n\nAnna\n") -> bytes:
    base = {"From": "Anna Client <anna@client.example>", "To": "support@desk.example.test",
            "Subject": "Question about my plan", "Message-ID": "<abc123@client.example>",
            "Date": "Sat, 21 Nov 2026 09:00:00 +0000"}
    base.update(headers)
    lines = [f"{k}: {v}" for k, v in base.items() if v is not None]
    return ("\r\n".join(lines) + "\r\n\r\n" + body.replace("\n", "\r\n")).encode()


def test_rules_are_named_and_ordered():
    """The rules run in the documented order, each under its name."""
    assert [name for name, _ in RULES] == ["own_mail", "bounce", "auto_reply"]


def test_our_own_mail_coming_back_is_own():
    """A message we built (loop header, our Message-ID) is "own"; either signal alone suffices."""
    msg = build_message(SETTINGS, subject="Your ticket [#T-1]", text="hi", html="<p>hi</p>",
                        to=["anna@client.example"], date=dt.datetime(2026, 11, 21, tzinfo=dt.timezone.utc))
    v = classify(parse(msg.raw), INBOUND, SETTINGS)
    assert (v.kind, v.rule) == ("own", "own_mail")
    assert classify(parse(raw({LOOP_HEADER: "desk.example.test"})), INBOUND, SETTINGS).kind == "own"
    assert classify(parse(raw({"Message-ID": "<rd.1@desk.example.test>"})), INBOUND, SETTINGS).kind == "own"
    assert classify(parse(raw({LOOP_HEADER: "other.example"})), INBOUND, SETTINGS).kind == "unclassified"


def test_a_normal_client_mail_is_unclassified():
    """Plain mail from a person matches none of the three rules."""
    assert classify(parse(raw({})), INBOUND, SETTINGS) == Verdict("unclassified")


def test_x_auto_response_suppress_alone_is_not_an_auto_reply():
    """Outlook puts X-Auto-Response-Suppress on ordinary mail: it alone changes nothing."""
    v = classify(parse(raw({"X-Auto-Response-Suppress": "All"})), INBOUND, SETTINGS)
    assert v.kind == "unclassified"


@pytest.mark.parametrize("headers, signal", [
    ({"Auto-Submitted": "auto-replied"}, "auto-submitted"),
    ({"Auto-Submitted": "auto-generated; owner-email=x@y.example"}, "auto-submitted"),
    ({"Precedence": "junk"}, "precedence"),
    ({"X-Autoreply": "yes"}, "x-autoreply"),
    ({"X-Loop": "anna@client.example"}, "x-loop"),
    ({"Subject": "Abwesenheitsnotiz: Question"}, "subject"),
    ({"Subject": "Réponse automatique : Question"}, "subject"),
    ({"Subject": "Respuesta automática: Question"}, "subject"),
    ({"Subject": "Afwezig: Question"}, "subject"),
    ({"Subject": "自動応答: Question"}, "subject"),
    ({"Subject": "Out of Office: Question"}, "subject"),
])
def test_auto_replies(headers, signal):
    """Each RFC 3834 / vendor / out-of-office signal makes an auto_reply, and says which."""
    v = classify(parse(raw(headers)), INBOUND, SETTINGS)
    assert (v.kind, v.rule, v.detail["signal"]) == ("auto_reply", "auto_reply", signal)


def test_auto_submitted_no_is_a_person():
    """Auto-Submitted: no is what a person's client may send: not an auto-reply."""
    assert classify(parse(raw({"Auto-Submitted": "no"})), INBOUND, SETTINGS).kind == "unclassified"


def test_list_mail_is_bulk():
    """List-Id / List-Unsubscribe / Precedence: list make "bulk"."""
    for headers in ({"List-Id": "<news.client.example>"}, {"List-Unsubscribe": "<mailto:u@client.example>"},
                    {"Precedence": "list"}):
        v = classify(parse(raw(headers)), INBOUND, SETTINGS)
        assert v.kind == "bulk", headers


DSN = """\
From: Mail Delivery System <MAILER-DAEMON@mx.client.example>
To: support@desk.example.test
Subject: Undelivered Mail Returned to Sender
Message-ID: <dsn.1@mx.client.example>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="b"

--b
Content-Type: text/plain

I could not deliver your message to <gone@client.example>.

--b
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.client.example

Final-Recipient: rfc822; gone@client.example
Original-Recipient: rfc822;gone@client.example
Action: failed
Status: 5.1.1
Diagnostic-Code: smtp; 550 5.1.1 user unknown

--b
Content-Type: text/rfc822-headers

From: support@desk.example.test
To: gone@client.example
Subject: Your renewal
Message-ID: <rd.42@desk.example.test>

--b--
"""


def test_standard_dsn_gives_recipient_status_and_original_message_id():
    """A multipart/report DSN is a bounce with the failed recipient, status, action and our Message-ID."""
    v = classify(parse(DSN.replace("\n", "\r\n").encode()), Envelope("", "support@desk.example.test"), SETTINGS)
    assert (v.kind, v.rule) == ("bounce", "bounce")
    assert v.detail["recipients"] == ["gone@client.example"]
    assert v.detail["status"] == "5.1.1" and v.detail["action"] == "failed"
    assert v.detail["original_message_id"] == "<rd.42@desk.example.test>"


def test_null_sender_without_a_report_is_not_a_bounce():
    """A null envelope sender alone (e.g. a vacation reply) does not make a bounce."""
    v = classify(parse(raw({"Subject": "Thanks!"})), Envelope("<>", "support@desk.example.test"), SETTINGS)
    assert v.kind == "unclassified"


def test_a_forwarded_bounce_from_a_person_is_not_a_bounce():
    """A client who forwards a bounce (quoted with '>') is asking us something: not a bounce."""
    body = ("Can you help?\n\n> Hi. This is the qmail-send program at mx.example.\n"
            "> I'm afraid I wasn't able to deliver your message to the following addresses.\n")
    v = classify(parse(raw({"Subject": "Fwd: failure notice"}, body)), INBOUND, SETTINGS)
    assert v.kind == "unclassified"


def test_the_bounce_format_shortcut_answers_as_the_full_search_does():
    """classify_patterns.bounce_format skips most of the searches for ordinary mail; over every
    sisimai message (hundreds of real notices, the not/ set, the auto-replies) and a few edge
    cases it names the same format, or none, as searching each format in turn."""
    from mail_ingest.classify import _body
    from mail_ingest.classify_patterns import BOUNCE_FORMATS, bounce_format

    def full(text: str):
        return next((name for name, pattern in BOUNCE_FORMATS if pattern.search(text)), None)

    bodies = [_body(parse(data)) for _, data in sisimai(("lhost-", "rhost-", "rfc3464-", "rfc3834-"))]
    bodies += [_body(parse(p.read_bytes())) for p in sorted((SISIMAI / "not").iterdir()) if p.is_file()]
    bodies += ["", "Hello\n\nTHIS IS THE MAIL SYSTEM AT HOST mx.example", "text\n  Final-Recipient: x",
               "письмо не было доставлено", "メールエラー",
               "Google Groups says we couldn't deliver it"]
    named = [full(b) for b in bodies]
    assert sum(n is not None for n in named) > 300  # the corpus is there and full of notices
    assert [bounce_format(b) for b in bodies] == named
