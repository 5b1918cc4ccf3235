"""The localized line patterns :mod:`mail_ingest.strip` recognises.

Kept apart from the algorithm so a new language is one more entry here. Every pattern is applied
to one line, or to up to three lines joined with single spaces (attribution lines that clients
wrap), after surrounding whitespace is removed.
"""
from __future__ import annotations

import re

from mail_ingest.html_text import QUOTE_MARKER

# -- dates, addresses ---------------------------------------------------------------------------

#: something that looks like a date or a time: 14:20, 10h30, 18.30, 02.04.2012, 2017-11-24,
#: a year, or a CJK date.
DATE = re.compile(
    r"\d{1,2}[:.h]\d{2}(?!\d)"
    r"|\d{1,4}[./-]\d{1,2}[./-]\d{2,4}"
    r"|(?<!\d)(?:19|20)\d{2}(?!\d)"
    r"|\d+\s*[年月日]"
)
EMAIL = re.compile(r"[\w.+'%-]+@[\w-]+(?:\.[\w-]+)+")
#: an address the way attribution lines show it: <a@b.c>, (a@b.c), [mailto:a@b.c]
BRACKETED_EMAIL = re.compile(r"[<(\[]\s*(?:mailto:)?[\w.+'%-]+@[\w.-]+\s*[>)\]]")

# -- "On <date>, <name> wrote:" -----------------------------------------------------------------

_COLON = r"\s*[:：]"
#: attribution lines by language; each also needs a date or an address somewhere in the line
ATTRIBUTIONS: list[re.Pattern[str]] = [
    # English
    re.compile(rf"^On\b.+\bwrote(?:{_COLON})?$"),
    # German
    re.compile(rf"^Am\b.+\bschrieb\b.*{_COLON}$"),
    re.compile(rf"^Am\b.+\bgeschrieben{_COLON}$"),
    # French
    re.compile(rf"^Le\b.+\b(?:a|avez|as)\s+écrit{_COLON}$"),
    # Spanish
    re.compile(rf"^El\b.+\bescribió{_COLON}$"),
    # Dutch
    re.compile(rf"^Op\b.+\b(?:schreef|geschreven)\b.*{_COLON}$"),
    # Portuguese
    re.compile(rf"^(?:Em|No dia)\b.+\bescreveu{_COLON}$"),
    # Italian
    re.compile(rf"^(?:Il|In data)\b.+\bscritto{_COLON}$"),
    # Polish
    re.compile(rf"^(?:W dniu|Dnia)\b.+\b(?:pisze|napisał|napisała|napisał\(a\)){_COLON}$"),
    # Swedish, Danish, Norwegian
    re.compile(rf"^(?:Den|På)\b.+\bskrev\b.*{_COLON}$"),
    # Japanese (Thunderbird, Apple Mail, Outlook for Mac)
    re.compile(r"(?:書きました|書き込みました|のメッセージ|のメール)\s*[:：]?$"),
    # Chinese, Korean
    re.compile(r"(?:写道|寫道|작성)\s*[:：]$"),
]

#: verbs that close an attribution in any language ("... <name> <verb>:")
_VERBS = (
    r"wrote|schrieb|geschrieben|écrit|escribió|schreef|geschreven|escreveu|scritto|skrev|"
    r"kirjoitti|написал|написала|написал\(а\)|пишет|написав|napisał|napisała|napisał\(a\)|"
    r"pisze|írta|yazdı|napsal|napsala|napsal\(a\)|kirjutas|rašė|rakstīja|a scris|έγραψε|כתב"
)
#: "<date> ... <verb>:" or "<date> ... <verb> <name> <address>:" (needs a date)
VERB_ATTRIBUTION = re.compile(rf"\b(?:{_VERBS})(?P<tail>(?:\s.*)?){_COLON}$")
#: "<name> <verb>:" with a short name (at most four words), e.g. "Bob Smith wrote:"
SHORT_VERB_ATTRIBUTION = re.compile(rf"^(?:\S+\s+){{1,4}}(?:{_VERBS}){_COLON}$")

#: how a wrapped attribution starts its first line; preferred over a shorter match
ATTRIBUTION_START = re.compile(
    r"^(?:On|Am|Le|El|Op|Em|No dia|Il|In data|W dniu|Dnia|Den|På)\b|^\d"
)
#: a line that can only be the continuation of a wrapped attribution
CONTINUATION = re.compile(rf"^(?:[<(\[>]|[\w.+'%-]+@|(?:{_VERBS}|a\s+écrit|ha\s+scritto)\b)")

# -- header blocks: "From: ... Sent: ... To: ... Subject: ..." --------------------------------

FROM, DATE_KEY, TO, CC, SUBJECT = "from", "date", "to", "cc", "subject"
_HEADER_KEYS = {
    FROM: "From|De|Von|Van|Da|Fra|Från|Od|Lähettäjä|Feladó|Kimden|Від|От|Expéditeur|Remitente|"
    "差出人|送信者|发件人|發件人|寄件者|보낸 사람",
    DATE_KEY: "Sent|Date|Datum|Envoyé le|Envoyé|Gesendet|Verzonden|Inviato|Enviado|Enviada|Fecha|"
    "Data|Dato|Sendt|Skickat|Lähetetty|Päivämäärä|Wysłano|Wysłane|Odesláno|Elküldve|Gönderildi|"
    "Отправлено|Дата|Надіслано|Message du|送信日時|日付|发送时间|發送時間|日期|보낸 날짜",
    TO: "To|À|A|An|Aan|Para|Til|Till|Do|Vastaanottaja|Címzett|Kime|Кому|宛先|收件人|收件者|받는 사람",
    CC: "Cc|CC|Cci|Copie à|Kopie|Kopio|Kopia|Dw|Копия|Копія|Másolat|抄送|副本|参照",
    SUBJECT: "Subject|Objet|Sujet|Betreff|Onderwerp|Oggetto|Asunto|Assunto|Emne|Ämne|Aihe|"
    "Temat|Předmět|Tárgy|Konu|Тема|件名|主题|主旨|제목",
}
_ALL_KEYS = "|".join(f"(?P<{cat}>{keys})" for cat, keys in _HEADER_KEYS.items())
#: a header line as quoted by mail clients, optionally in Markdown bold: "*From:* x"
HEADER_LINE = re.compile(rf"^\s*\*{{0,2}}(?:{_ALL_KEYS})\s*\*{{0,2}}\s*[:：]\s*\*{{0,2}}")
#: a second header on the same line ("À : x Objet : y")
INLINE_HEADER = re.compile(rf"\s(?:{_ALL_KEYS})\s?[:：]\s")
#: subjects of forwarded messages: a forward is the customer's content, not a quote
FORWARD_SUBJECT = re.compile(
    r"^(?:fwd?|fw|wg|tr|rv|enc|vs|vb|i|doorst|pd|přeposlat|továbbítás|пересл)\s*:", re.I
)
FORWARD_LINE = re.compile(
    r"forwarded message|begin forwarded message|weitergeleitete nachricht|message transféré|"
    r"mensaje reenviado|mensagem encaminhada|messaggio inoltrato|doorgestuurd bericht|"
    r"videresendt (?:meddelelse|besked|melding)|vidarebefordrat meddelande|välitetty viesti|"
    r"przekazana wiadomość|пересылаемое сообщение|переадресованного сообщения|転送メッセージ|"
    r"轉寄的郵件|转发的邮件",
    re.I,
)

# -- lines that alone start the quoted part -----------------------------------------------------

_ORIGINAL = (
    r"original message|ursprüngliche nachricht|originalnachricht|message d'origine|"
    r"message original|mensaje original|mensagem original|messaggio originale|"
    r"oorspronkelijk bericht|origineel bericht|oprindelig (?:besked|meddelelse)|"
    r"opprinnelig melding|ursprungligt meddelande|alkuperäinen viesti|oryginalna wiadomość|"
    r"wiadomość oryginalna|исходное сообщение|původní zpráva|eredeti üzenet|orijinal mesaj|"
    r"元のメッセージ|原始邮件|原始郵件|quoted message"
)
SEPARATOR = re.compile(
    rf"^\s*(?:[-_=*~]{{2,}}\s*)?(?:{_ORIGINAL})(?:\s*[-_=*~]{{2,}})?\s*:?\s*$", re.I
)
MARKER = QUOTE_MARKER
#: a line the sender's client (or our own mail) puts above the quoted history
REPLY_ABOVE = re.compile(r"reply above this line|write above this line|antworten sie oberhalb", re.I)
#: separator lines that may sit above a header block and are dropped with it
RULE_LINE = re.compile(r"^\s*[-_=*~—–]{2,}\s*$")

# -- signatures ---------------------------------------------------------------------------------

#: "Sent from my iPhone" and friends; must also be short and carry no sentence punctuation
MOBILE = re.compile(
    r"^\s*(?:Sent (?:from|with|via|using) |Get Outlook for |Envoyé (?:de |depuis |à partir de |"
    r"avec )|Gesendet (?:von|mit) |Von meinem .+ gesendet|Verzonden (?:vanaf|met|van) |"
    r"Verstuurd (?:vanaf|met|van) |Enviado (?:desde|de|do|a partir do|com|con) |"
    r"Enviada (?:desde|de|do) |Inviato (?:da|dal|con) |Wysłane z |Wysłano z |"
    r"Отправлено (?:с|из) |Lähetetty |Sendt fra |Skickat från |Odesláno z |Trimis de pe |"
    r"(?:iPhone|iPad|Android|Galaxy)(?:から送信|で送信)|从我的|來自我的)"
)
MOBILE_URL = re.compile(r"<[^>]*>|\([^)]*\)|\bhttps?://\S+")
VALEDICTION = re.compile(
    r"^\s*(?:(?:(?:best|kind|kindest|warm|warmest|many|with|yours)\s+)?(?:regards|wishes)"
    r"|yours (?:sincerely|truly|faithfully)|sincerely(?: yours)?|cheers|best|all the best|"
    r"thanks (?:and|&) regards|mit freundlichen grüßen|mit freundlichen grüssen|"
    r"(?:freundliche|viele|beste|liebe|herzliche) grü(?:ß|ss)e|mfg|(?:bien )?cordialement|"
    r"salutations(?: distinguées)?|bien à vous|(?:un )?saludos?(?: cordiales)?|atentamente|"
    r"(?:met )?vriendelijke groet(?:en)?|groet(?:en|jes)?|atenciosamente|cumprimentos|"
    r"(?:cordiali |distinti )?salut[io]|un saluto|pozdrawiam|z poważaniem|с уважением|"
    r"ystävällisin terveisin|terveisin|(?:med )?venlig hilsen|(?:med )?vennlig hilsen|mvh|"
    r"med vänlig hälsning|vänliga hälsningar|hälsningar)"
    r"\s*[,.!]*\s*\W{0,3}\s*$",
    re.I,
)
SIGNATURE_DASHES = re.compile(r"^--\s*$")
FOOTER_RULE = re.compile(r"^\s*_{2,}\s*$")
FOOTER_HINT = re.compile(r"mailing list|unsubscribe|listinfo|https?://|@", re.I)
