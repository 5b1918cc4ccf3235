"""Which kind of mail a parsed message is, decided by an ordered list of small named rules.

:func:`classify` runs :data:`RULES` in order and returns the first rule's :class:`Verdict`, or
``Verdict("unclassified")`` when none matched (the later ticket and renewal rules take it from
there). Each rule is ``(name, fn)`` with ``fn(mail, envelope, settings) -> Verdict | None``;
rules never raise on odd mail: a rule that fails is treated as "no match".

1. ``own_mail`` — our own mail coming back (loop header or our Message-ID): kind ``own``.
2. ``bounce`` — a delivery status notification, standard (RFC 3464) or in one of the common
   vendor formats: kind ``bounce``; ``detail`` holds what could be read of the failed
   recipients, the status code, the action and the original Message-ID.
3. ``auto_reply`` — RFC 3834 auto-replies, out-of-office notices, loops: kind ``auto_reply``;
   mailing-list and bulk mail: kind ``bulk``. ``detail["signal"]`` says what gave it away.
   ``X-Auto-Response-Suppress`` on its own means nothing here: it is a request about *replies
   to* the message, sent by ordinary clients such as Outlook.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from mail_ingest import classify_patterns as P
from mail_ingest.parse import ParsedMail

__all__ = ["Envelope", "Verdict", "Rule", "RULES", "classify", "is_null_sender"]

_SCAN_CHARS = 20000  # how much of a body the pattern rules look at


@dataclass(frozen=True)
class Envelope:
    """The SMTP envelope: ``mail_from`` is the reverse path ("" or "<>" for the null sender)."""

    mail_from: str
    recipient: str


@dataclass(frozen=True)
class Verdict:
    kind: str
    rule: str = ""
    detail: dict[str, Any] = field(default_factory=dict)


Rule = tuple[str, Callable[[ParsedMail, Envelope, Any], "Verdict | None"]]


def classify(mail: ParsedMail, envelope: Envelope, settings: Any) -> Verdict:
    """The verdict of the first rule of :data:`RULES` that matches, else ``unclassified``."""
    for name, fn in RULES:
        try:
            verdict = fn(mail, envelope, settings)
        except Exception:  # a rule tripping over odd mail must not stop the others
            verdict = None
        if verdict is not None:
            return verdict
    return Verdict("unclassified")


# --- helpers -------------------------------------------------------------------------------


def _our_domains(settings: Any) -> tuple[str, ...]:
    domains = getattr(settings, "mail_domains", None)
    if not domains:
        domains = (str(getattr(settings, "mail_domain", "")).lower(),)
    return tuple(d for d in domains if d)


def is_null_sender(mail_from: str | None) -> bool:
    """True for the null reverse path ("" or "<>"), the sender of every delivery report."""
    return (mail_from or "").strip() in ("", "<>")


def _localpart(address: str | None) -> str:
    return (address or "").strip().strip("<>").rsplit("@", 1)[0].strip().lower()


def _header(mail: ParsedMail, name: str) -> str:
    return (mail.headers.get(name) or "").strip()


def _auto_submitted(mail: ParsedMail) -> str:
    """The Auto-Submitted keyword, lower-case ("" when absent)."""
    return _header(mail, "auto-submitted").split(";", 1)[0].strip().lower()


def _body(mail: ParsedMail) -> str:
    """The text to look at: body and text attachments, without quoted (``>``) lines."""
    pieces = [mail.text or ""]
    for att in mail.attachments:
        if att.content and att.content_type.lower().startswith("text/plain"):
            pieces.append(att.content[:_SCAN_CHARS].decode("utf-8", "replace"))
    text = "\n".join(pieces)[:_SCAN_CHARS]
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith(">"))


def _dsn_blocks(mail: ParsedMail) -> list[str]:
    return [att.content.decode("utf-8", "replace") for att in mail.attachments
            if att.content and att.content_type.lower().split(";")[0].strip()
            in ("message/delivery-status", "message/global-delivery-status")]


# --- rule 1: our own mail ------------------------------------------------------------------


def own_mail(mail: ParsedMail, envelope: Envelope, settings: Any) -> Verdict | None:
    from handlers.outbox import LOOP_HEADER

    domains = _our_domains(settings)
    for value in mail.headers.get_all(LOOP_HEADER):
        if value.strip().lower() in domains:
            return Verdict("own", "own_mail", {"signal": "loop-header", "domain": value.strip().lower()})
    msgid = (mail.message_id or "").lower()
    for domain in domains:
        if msgid.endswith(f"@{domain}>"):
            return Verdict("own", "own_mail", {"signal": "message-id", "message_id": mail.message_id})
    return None


# --- rule 2: bounces -----------------------------------------------------------------------


def bounce(mail: ParsedMail, envelope: Envelope, settings: Any) -> Verdict | None:
    """A delivery status notification, in the order of how sure the signal is.

    1. a ``message/delivery-status`` part (inside multipart/report or not);
    2. the wording of a known mail system's notice, in the unquoted body;
    3. weak: a null or daemon sender *and* a failure subject ("Delivery Status Notification",
       "Undeliverable", ...), or a daemon sender and a report-like body — never with an
       out-of-office subject, and the body alone does not count for a message that calls itself
       ``Auto-Submitted: auto-replied`` (a responder's notice, like a mailbox's own
       "bounce notification" reply; a real bounce carries 1., 2. or a failure subject).
    """
    blocks = _dsn_blocks(mail)
    body = _body(mail)
    if blocks or (mail.is_multipart_report and mail.report_type == "delivery-status"):
        return _bounce_verdict(mail, body, blocks, "delivery-status")
    name = P.bounce_format(body)
    if name is not None:
        return _bounce_verdict(mail, body, blocks, f"format:{name}")
    daemon = (P.DAEMON_LOCALPART.match(_localpart(mail.from_addr)) is not None
              or P.DAEMON_LOCALPART.match(_localpart(envelope.mail_from)) is not None
              or "From is the null sender <>" in mail.defects)
    if not (daemon or is_null_sender(envelope.mail_from)):
        return None
    if P.AUTO_REPLY_SUBJECT.search(mail.subject or ""):
        return None
    if P.FAILURE_SUBJECT.search(mail.subject or ""):
        return _bounce_verdict(mail, body, blocks, "failure-subject")
    if daemon and _auto_submitted(mail) != "auto-replied" and P.FAILURE_BODY.search(body):
        return _bounce_verdict(mail, body, blocks, "failure-body")
    return None


def _bounce_verdict(mail: ParsedMail, body: str, blocks: list[str], signal: str) -> Verdict:
    detail: dict[str, Any] = {"signal": signal}
    recipients: list[str] = []
    fields: dict[str, str] = {}
    for block in blocks + [body]:
        for name, value in P.DSN_FIELD.findall(block):
            name = name.lower()
            if name in ("final-recipient", "original-recipient"):
                found = P.ADDRESS.search(value.split(";", 1)[-1])
                if found:
                    recipients.append(found.group(1).lower())
            else:
                fields.setdefault(name, value.strip())
        if recipients:
            break
    if not recipients:
        recipients = _recipients_from_text(mail, body)
    recipients = list(dict.fromkeys(recipients))[:20]
    if recipients:
        detail["recipients"] = recipients
    status = P.STATUS_CODE.search(fields.get("status", "")) or P.STATUS_CODE.search(
        fields.get("diagnostic-code", "")) or P.STATUS_CODE.search(body)
    if status:
        detail["status"] = status.group(1)
    if "action" in fields:
        detail["action"] = fields["action"].split()[0].lower()
    if "diagnostic-code" in fields:
        detail["diagnostic"] = fields["diagnostic-code"][:500]
    original = _original_message_id(mail, body)
    if original:
        detail["original_message_id"] = original
    return Verdict("bounce", "bounce", detail)


def _recipients_from_text(mail: ParsedMail, body: str) -> list[str]:
    """Addresses named in the notice itself (before the returned message), not its own parties."""
    skip = {a.lower() for a in (mail.from_addr, *mail.to, *mail.cc) if a}
    for original in mail.forwarded:
        if original.from_addr:
            skip.add(original.from_addr.lower())
    found = []
    for line in body.splitlines()[:80]:
        if P.RETURNED_MESSAGE_START.match(line):
            break
        if P.MESSAGE_ID_LINE.match(line) or line.lower().lstrip().startswith("from:"):
            continue
        for match in P.ADDRESS.finditer(line):
            address = match.group(1).lower().rstrip(".")
            if "=" not in address and address not in skip and P.DAEMON_LOCALPART.match(address.split("@")[0]) is None:
                found.append(address)
    return found[:20]


def _original_message_id(mail: ParsedMail, body: str) -> str | None:
    for original in mail.forwarded:
        if original.message_id:
            return original.message_id
    for att in mail.attachments:
        if att.content and "rfc822" in att.content_type.lower():
            match = P.MESSAGE_ID_LINE.search(att.content[:_SCAN_CHARS].decode("utf-8", "replace"))
            if match:
                return match.group(1)
    text = mail.text[:_SCAN_CHARS] if mail.text else ""
    match = P.MESSAGE_ID_LINE.search(text) or P.MESSAGE_ID_LINE.search(body)
    return match.group(1) if match else None


# --- rule 3: auto-replies and bulk ---------------------------------------------------------


def auto_reply(mail: ParsedMail, envelope: Envelope, settings: Any) -> Verdict | None:
    def verdict(kind: str, signal: str, value: str) -> Verdict:
        return Verdict(kind, "auto_reply", {"signal": signal, "value": value[:200]})

    submitted = _auto_submitted(mail)
    if submitted and submitted != "no":
        return verdict("auto_reply", "auto-submitted", submitted)
    for name in P.AUTOREPLY_HEADERS:
        if name in mail.headers:
            return verdict("auto_reply", name.lower(), _header(mail, name))
    subject = mail.subject or ""
    match = P.AUTO_REPLY_SUBJECT.search(subject)
    if match:
        return verdict("auto_reply", "subject", match.group(0))
    for name in mail.headers:
        if name.lower().startswith("list-"):
            return verdict("bulk", name.lower(), _header(mail, name))
    precedence = _header(mail, "precedence").lower()
    if precedence == "list":
        return verdict("bulk", "precedence", precedence)
    if precedence in ("bulk", "junk", "auto_reply", "auto-reply"):
        return verdict("auto_reply", "precedence", precedence)
    if "x-loop" in mail.headers:
        return verdict("auto_reply", "x-loop", _header(mail, "x-loop"))
    return None


RULES: tuple[Rule, ...] = (
    ("own_mail", own_mail),
    ("bounce", bounce),
    ("auto_reply", auto_reply),
)
