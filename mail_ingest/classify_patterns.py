"""The text patterns :mod:`mail_ingest.classify` matches, kept apart so the rules stay readable.

Every pattern is compiled case-insensitive. Body patterns are matched against the lines of the
message that are not quoted (a line starting with ``>`` is someone else's text), so a person who
forwards a bounce to us with "Fwd:" is not taken for the mail system itself.
"""
from __future__ import annotations

import re

_I = re.IGNORECASE
_IM = re.IGNORECASE | re.MULTILINE

# Local parts that mail systems send their notices from.
DAEMON_LOCALPART = re.compile(
    r"^(mailer[-_.]?daemon|mail[-_.]?daemon|postmaster|post_master|mail\.delivery\.system|"
    r"double-bounce|mdaemon|bounces?-daemon)$", _I)

# Wording of one mail system's (or service's) non-delivery notice: enough on its own.
# (name, pattern) — the name goes into the verdict's detail.
BOUNCE_FORMATS: tuple[tuple[str, re.Pattern[str]], ...] = tuple((name, re.compile(rx, _IM)) for name, rx in (
    ("qmail", r"^Hi\. This is the qmail[- ]send program"),
    ("qmail", r"^I'm afraid I wasn't able to deliver your message to the following addresses"),
    ("exim", r"^This message was created automatically by mail delivery software"),
    ("exim", r"^A message that you sent (could not be delivered|has not yet been delivered)"),
    ("postfix", r"^This is the mail system at host"),
    ("postfix", r"^I'm sorry to have to inform you that your message could not"),
    ("sendmail", r"^-+ ?The following addresses had (permanent fatal|transient non-fatal) errors"),
    ("sendmail", r"^-+ ?Transcript of session follows"),
    ("smail", r"^\|?-+ ?Failed addresses follow:"),
    ("sendmail", r"^The original message was received at .* from"),
    ("exchange", r"^Delivery has failed to these recipients or (groups|distribution lists)"),
    ("exchange", r"^Your message did not reach some or all of the intended recipients"),
    ("exchange", r"^(Your message (to .{1,200}? )?(couldn't|could not|wasn't|can't|cannot) be delivered)"),
    ("exchange", r"^The following recipient\(s\) cannot be reached"),
    ("exchange", r"^did not reach the following recipient"),
    ("notes", r"^Your message\s+Subject: .*\s+was not delivered to"),
    ("notes", r"^The following message could not be delivered to"),
    ("yahoo", r"^Sorry, we were unable to deliver your message to the following address"),
    ("gmail", r"^Delivery to the following recipients? (failed|has been delayed)"),
    ("gmail", r"^(\*\* )?(Address not found|Message not delivered|Message blocked|Delivery incomplete)( \*\*)?\s*$"),
    ("gmail", r"^There was a (temporary )?problem delivering your message to"),
    ("googlegroups", r"Google Groups.{0,80}(couldn't|could not|can't) (be )?deliver|your message wasn't delivered to"),
    ("amazonses", r"^An error occurred while trying to deliver the mail to the following recipients"),
    ("amazonses", r"\\?\"notificationType\\?\"\s*:\s*\\?\"(Bounce|Complaint|Delivery)\\?\""),
    ("dragonfly", r"^This is the DragonFly Mail Agent"),
    ("dragonfly", r"^There was an error delivering your mail to"),
    ("opensmtpd", r"^\s*This is the MAILER-DAEMON, please DO NOT REPLY"),
    ("opensmtpd", r"^Your message could not be delivered to one or more recipients"),
    ("courier", r"^This is a delivery status notification from"),
    ("courier", r"^Your message to the following recipients cannot be delivered"),
    ("kddi", r"Could not be delivered to:"),
    ("verizon", r"^Error: (Invalid user address|.{1,80})\s+Error message below:"),
    ("fml", r"^You are not a member of this mailing list"),
    ("fml", r"^Duplicated Message-ID in"),
    ("generic", r"^The following (message|addresses?) (to .{1,200} )?(could not|cannot|was not|were not) be delivered"),
    ("generic", r"^(Your|The) (mail|message) (could not|was not|cannot) be delivered"),
    ("generic", r"^Unable to deliver (the |your )?message to the following"),
    ("generic", r"^(This is a|This is the) (permanent|temporary)? ?(error|failure|delivery)"
                r".{0,60}(report|notification)"),
    ("generic", r"^Mail delivery failed|^Delivery (to|of) .{1,200} (failed|has failed)"),
    ("generic", r"^Original-Recipient:|^Final-Recipient:"),
    ("japanese", r"(配信|送信)(でき|出来)(ません|なかった)|宛先不明|メールエラー"),
    ("russian", r"(сообщение|письмо).{0,40}не (было )?доставлено"),
))


def _alternatives(pattern: str) -> list[str]:
    """The top-level ``|`` alternatives of a regular expression's source."""
    parts, depth, start, i, in_class = [], 0, 0, 0, False
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            i += 1
        elif in_class:
            in_class = c != "]"
        elif c == "[":
            in_class = True
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        elif c == "|" and depth == 0:
            parts.append(pattern[start:i])
            start = i + 1
        i += 1
    return parts + [pattern[start:]]


def _line_start_gate(formats: tuple[tuple[str, re.Pattern[str]], ...]) -> tuple[re.Pattern[str], tuple]:
    """Most formats match only at the start of a line. Searched one by one, each scans the whole
    body; one search of ``^(?:a|b|...)`` tries the alternatives only where a line starts, and
    says whether any of them can match (the loop then finds which, as before). The formats
    that may match anywhere are returned to be searched as they are."""
    anchored, anywhere = [], []
    for name, pattern in formats:
        alternatives = _alternatives(pattern.pattern)
        if all(a.startswith("^") for a in alternatives):
            anchored += [f"(?:{a[1:]})" for a in alternatives]
        else:
            anywhere.append((name, pattern))
    return re.compile("^(?:" + "|".join(anchored) + ")", _IM), tuple(anywhere)


_BOUNCE_GATE, _BOUNCE_ANYWHERE = _line_start_gate(BOUNCE_FORMATS)


def bounce_format(body: str) -> str | None:
    """The name of the first of BOUNCE_FORMATS that matches ``body``, or None.

    The same answer as searching every pattern in turn, at a fraction of the cost for the mail
    that is not a bounce (nearly all of it): the line-start formats share one search, and the
    formats written in a non-Latin script are not searched in an ASCII body.
    """
    ascii_only = body.isascii()
    anywhere = (pattern for _, pattern in _BOUNCE_ANYWHERE if not (ascii_only and not pattern.pattern.isascii()))
    if _BOUNCE_GATE.search(body) is None and not any(pattern.search(body) for pattern in anywhere):
        return None
    return next((name for name, pattern in BOUNCE_FORMATS if pattern.search(body)), None)

# Subjects that mail systems put on their notices; they need a daemon sender or a null sender.
FAILURE_SUBJECT = re.compile(
    r"(delivery status notification|undeliver|undelivered mail|returned mail|"
    r"return(ing)? (the )?(message |mail )?to sender|"
    r"mail delivery (failed|failure|system)|delivery (failure|failed|problem|notification)|failure (notice|delivery)|"
    r"failed (delivery|mail)|mail failure|could not be delivered|non[- ]?delivery|delivery status|"
    r"delayed mail|\bdelayed\b.*\bhours?\b|could not send mail|mail system error|message delivery has failed|"
    r"there was an error sending your mail|delivery report|"
    r"メッセージを配信できません|メールエラー|не доставлено)", _I)

# A body that reads like a delivery report (second half of the weak rule).
FAILURE_BODY = re.compile(
    r"(\b[245]\.\d{1,3}\.\d{1,3}\b|^\s*[45]\d\d[ -]|could not be delivered|undeliverable|"
    r"delivery (has )?failed|user unknown|unknown user|no such (user|mailbox|recipient)|"
    r"mailbox (is )?(full|unavailable|not found)|recipient address rejected|permanent (error|failure)|"
    r"returned to (the )?sender|host not found|message (was )?not delivered)", _IM)

STATUS_CODE = re.compile(r"\b([245]\.\d{1,3}\.\d{1,3})\b")
MESSAGE_ID_LINE = re.compile(r"^[ \t>]*Message-ID:\s*(<[^<>\s]+>)", _IM)
ADDRESS = re.compile(r"<?([A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+)>?")
# Where a notice ends and the returned message begins (recipients are looked for above it).
RETURNED_MESSAGE_START = re.compile(
    r"^\s*(-+ ?(original message|this is a copy|below this line|returned message|message text follows|"
    r"forwarded message)|(received|return-path|authentication-results|arc-[a-z-]+|dkim-signature):)", _I)
DSN_FIELD = re.compile(r"^(Final-Recipient|Original-Recipient|Status|Action|Diagnostic-Code)\s*:\s*(.+)$", _IM)

# Out-of-office subjects, several languages.
AUTO_REPLY_SUBJECT = re.compile(
    r"(out of (the )?office|\bOOO\b|automatic reply|auto(matic)?[- ]?(reply|response|respon[sd]|answer)|autorespons|"
    r"autoreply|\baway (until|from)\b|on (vacation|holiday|leave)|vacation (reply|notice|message)|"
    r"abwesenheit|automatische antwort|nicht im (büro|buero)|"
    r"réponse automatique|reponse automatique|absence du bureau|absent du bureau|"
    r"respuesta automática|respuesta automatica|fuera de (la )?oficina|"
    r"afwezig|automatisch antwoord|niet aanwezig|"
    r"risposta automatica|fuori (sede|ufficio)|"
    r"resposta automática|resposta automatica|ausente do escritório|"
    r"odpowiedź automatyczna|automatyczna odpowiedź|nieobecnoś|"
    r"autosvar|automaattinen vastaus|frånvaro|"
    r"自動応答|自動返信|不在(通知|のお知らせ)|自动回复|自動回覆|"
    r"автоответ|автоматический ответ|"
    r"otomatik yanıt)", _I)

AUTOREPLY_HEADERS = ("X-Autoreply", "X-Autorespond", "X-Autoresponder", "X-Autogenerated")
