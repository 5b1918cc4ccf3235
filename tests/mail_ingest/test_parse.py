"""mail_ingest.parse on real-world mail (../shared/corpus) and on messages built to break it."""
from __future__ import annotations

import base64
import binascii
import datetime as dt
import random
import time

import pytest

from mail_ingest.parse import ParsedMail, parse

from tests.support.corpus import CORPUS
RUBY = CORPUS / "ruby-mail" / "spec" / "fixtures" / "emails"
FOLDERS = ("ruby-mail", "sisimai-set-of-emails", "talon", "crisp-email-reply-parser")
NOT_MAIL = {"LICENSE", "MIT-LICENSE", "SOURCE.md", ".gitattributes"}
BODY_ONLY = ("talon", "crisp-email-reply-parser")  # their .txt/.html files are bodies without headers


def need_corpus() -> None:
    if not CORPUS.is_dir():
        pytest.skip(f"the shared mail corpus is not at {CORPUS}")


def wrap(body: bytes, subtype: str = "plain") -> bytes:
    """A body-only fixture as a minimal message."""
    return (b"From: Client <client@example.test>\r\nTo: support@desk.example.test\r\nSubject: fixture\r\n"
            b"MIME-Version: 1.0\r\nContent-Type: text/" + subtype.encode() + b"; charset=utf-8\r\n\r\n" + body)


def corpus_files(folder: str) -> list[tuple[str, bytes]]:
    found = []
    for path in sorted((CORPUS / folder).rglob("*")):
        if not path.is_file() or path.name in NOT_MAIL or path.suffix == ".json":
            continue
        data = path.read_bytes()
        if folder in BODY_ONLY and path.suffix in (".txt", ".html"):
            data = wrap(data, "html" if path.suffix == ".html" else "plain")
        found.append((str(path.relative_to(CORPUS)), data))
    return found


def ruby(name: str) -> ParsedMail:
    need_corpus()
    return parse((RUBY / name).read_bytes())


def mail(headers: str, body: bytes | str = b"", *, crlf: bool = True) -> bytes:
    """A message from a header block (one field per line) and a body."""
    if isinstance(body, str):
        body = body.encode("utf-8")
    head = "\r\n".join(line.strip() for line in headers.strip().splitlines()) if crlf else headers.strip()
    return head.encode("utf-8") + b"\r\n\r\n" + body


# --- the whole corpus ------------------------------------------------------------------------------

@pytest.mark.parametrize("folder", FOLDERS)
def test_every_corpus_file_parses_and_gives_text_or_a_reason(folder):
    """Every mail-like file of the four corpora parses without raising; each gives a text (possibly
    empty, e.g. attachment-only mail) or, only for a blank input, an unreadable_reason; nothing
    trips an internal error, and the basic invariants of a ParsedMail hold."""
    need_corpus()
    files = corpus_files(folder)
    assert files, f"no files found under {CORPUS / folder}"
    problems = []
    for name, data in files:
        try:
            m = parse(data)
        except Exception as exc:  # the point of the test: report every file, not the first
            problems.append(f"{name}: raised {type(exc).__name__}: {exc}")
            continue
        blank = not data.strip()
        if not isinstance(m.text, str) or "\x00" in m.text:
            problems.append(f"{name}: text is not clean str")
        if blank != bool(m.unreadable_reason):
            problems.append(f"{name}: unreadable_reason={m.unreadable_reason!r} "
                            f"for a {'blank' if blank else 'non-blank'} file")
        if any(d.startswith("internal error") for d in m.defects):
            problems.append(f"{name}: {m.defects}")
        if not isinstance(m.subject, str) or "\n" in m.subject or "\r" in m.subject:
            problems.append(f"{name}: subject {m.subject!r}")
        for a in m.attachments:
            if (a.content is None) != (a.dropped_reason is not None):
                problems.append(f"{name}: attachment {a.filename!r} content/dropped_reason disagree")
        if m.date is not None and m.date.tzinfo is None:
            problems.append(f"{name}: naive date")
    assert not problems, "\n".join(problems)


def test_sisimai_line_ending_twins_parse_alike():
    """The CRLF (dos/) and bare-CR (mac/) copies of sisimai's bounces read like their LF (bsd/) twins."""
    need_corpus()
    root = CORPUS / "sisimai-set-of-emails" / "maildir"
    compared, problems = 0, []
    for variant in ("dos", "mac"):
        for path in sorted((root / variant).glob("*.eml")):
            twin = root / "bsd" / path.name
            if not twin.exists():
                continue
            a, b = parse(twin.read_bytes()), parse(path.read_bytes())
            compared += 1
            for field in ("subject", "from_addr", "message_id", "text", "content_type", "report_type"):
                if getattr(a, field) != getattr(b, field):
                    problems.append(f"{variant}/{path.name}: {field} differs")
            if [x.filename for x in a.attachments] != [x.filename for x in b.attachments]:
                problems.append(f"{variant}/{path.name}: attachments differ")
            if len(a.forwarded) != len(b.forwarded):
                problems.append(f"{variant}/{path.name}: forwarded differ")
    assert compared > 100
    assert not problems, "\n".join(problems)


def test_sisimai_empty_inputs_are_unreadable_not_errors():
    """The 0- and 1-byte (a space) mailbox files are reported unreadable with a reason, not raised."""
    need_corpus()
    for name in ("size-0", "size-1"):
        m = parse((CORPUS / "sisimai-set-of-emails" / "mailbox" / name).read_bytes())
        assert m.unreadable_reason and m.text == ""


# --- ruby-mail: charsets ---------------------------------------------------------------------------

def test_japanese_in_iso_2022_jp_shift_jis_and_utf8_decode_to_japanese():
    """The three Japanese fixtures decode to their Japanese text (each carries a different phrase),
    and the encoded-word subjects too."""
    iso = ruby("multi_charset/japanese_iso_2022.eml")
    assert iso.text.strip() == "すみません。"
    assert iso.subject == "まみむめも"
    sjis = ruby("multi_charset/japanese_shift_jis.eml")
    assert "このメールはテスト用のメールです。" in sjis.text
    assert "今後ともよろしくお願い申し上げます！" in sjis.text
    utf8 = ruby("multi_charset/japanese.eml")
    assert utf8.text.startswith("かきくえこ")
    assert utf8.subject == "まみむめも" and utf8.to == ["raasdnil@gmail.com"]
    for m in (iso, sjis, utf8):
        assert "\ufffd" not in m.text and not any("detected" in d for d in m.defects)


@pytest.mark.parametrize("charset,codec,cte", [
    ("ISO-2022-JP", "iso2022_jp", "7bit"), ("iso-2022-jp-2", "iso2022_jp_2", "7bit"),
    ("Shift_JIS", "shift_jis", "8bit"), ("x-sjis", "cp932", "8bit"), ("EUC-JP", "euc_jp", "8bit"),
    ("UTF-8", "utf-8", "base64"), ("utf8", "utf-8", "quoted-printable"),
])
def test_one_japanese_phrase_in_every_japanese_charset_gives_the_same_text(charset, codec, cte):
    """The same Japanese sentence, sent in each Japanese charset label mailers use, decodes identically."""
    phrase = "お世話になっております。請求書の件でご連絡しました。"
    data = phrase.encode(codec)
    body = {"base64": base64.encodebytes(data), "quoted-printable": binascii.b2a_qp(data)}.get(cte, data)
    m = parse(mail(f"From: a@example.jp\nSubject: =?{charset}?B?{base64.b64encode('件名'.encode(codec)).decode()}?=\n"
                   f"Content-Type: text/plain; charset={charset}\nContent-Transfer-Encoding: {cte}", body))
    assert m.text.strip() == phrase
    assert m.subject == "件名"


def test_half_width_katakana_labelled_iso_2022_jp_uses_the_richer_family_member():
    """ISO-2022-JP mail with half-width katakana (not in RFC 1468) still decodes: the family is tried."""
    phrase = "ｶﾀｶﾅ のテスト"
    m = parse(mail("From: a@example.jp\nContent-Type: text/plain; charset=iso-2022-jp",
                   phrase.encode("iso2022_jp_ext")))
    assert m.text == phrase


def test_korean_ks_c_5601_1987_decodes():
    """ks_c_5601-1987 (Outlook's name for Korean) is read as cp949."""
    m = ruby("multi_charset/ks_c_5601-1987.eml")
    assert m.text.strip() == "스티해"
    assert ruby("plain_emails/raw_email.eml").subject == "NOTE: 한국말로 하는 것"


def test_raw_8bit_headers_are_decoded():
    """RFC 6532 UTF-8 headers and a raw latin-1 Subject both come out as readable text."""
    m = ruby("rfc6532/utf8_headers.eml")
    assert (m.subject, m.from_name, m.from_addr) == ("Säying Hello", "Jöhn Doe", "jdöe@mächine.example")
    latin = ruby("error_emails/invalid_subject_characters.eml")
    assert latin.subject == "Formação FrenetikPolis: Mega Campanha Final Verão | Cursos de Setembro"
    assert latin.from_name == "Formação Frenetikpolis"


def test_bad_encoded_subject_does_not_crash_and_reads():
    """``=?NONE?B?VEVTVA=?=`` (unknown charset, broken padding) still gives the subject TEST."""
    m = ruby("error_emails/bad_encoded_subject.eml")
    assert m.subject == "TEST" and m.text.strip() == "TEST"
    assert ruby("error_emails/bad_subject.eml").subject == "MySurvey.com:  You have a survey waiting!  91123105"


def test_missing_charset_with_latin1_bytes_is_detected_not_mojibake():
    """No charset and latin-1 bytes: "Café" survives (detection), it is not decoded as UTF-8 garbage."""
    short = parse(mail("From: a@example.test\nSubject: x", "Café".encode("latin-1")))
    assert short.text == "Café"
    longer = parse(mail("From: a@example.test\nContent-Type: text/plain",
                        "Un café au lait, s'il vous plaît. Merci beaucoup, à bientôt !".encode("latin-1")))
    assert longer.text == "Un café au lait, s'il vous plaît. Merci beaucoup, à bientôt !"
    wrong = parse(mail("From: a@example.test\nContent-Type: text/plain; charset=utf-8", "Café crème".encode("cp1252")))
    assert wrong.text == "Café crème"
    mostly_ascii = ("Dear support,\n" + "the invoice for the domain renewal is attached. " * 20 + "Merci, René\n")
    assert parse(mail("From: a@example.test", mostly_ascii.encode("latin-1"))).text == mostly_ascii
    cut = parse(mail("From: a@example.test", "Grüße aus Köln, bis bald! ".encode() * 5 + b"\xc3"))
    assert cut.text.startswith("Grüße aus Köln") and cut.text.endswith("\ufffd")
    unknown = parse(mail("From: a@example.test\nContent-Type: text/plain; charset=x-unknown", "Grüße".encode("utf-8")))
    assert unknown.text == "Grüße"


def test_utf8_mislabelled_as_latin1_is_read_as_utf8():
    """A latin-1 label on valid multi-byte UTF-8 is a mislabel: the text is not double-decoded."""
    m = parse(mail("From: a@example.test\nContent-Type: text/plain; charset=iso-8859-1", "Grüße, Zoë".encode("utf-8")))
    assert m.text == "Grüße, Zoë"
    assert any("UTF-8" in d for d in m.defects)


def test_charset_aliases():
    """utf8, windows-874, x-gbk, gb2312 and big5 labels decode through their mapped codecs."""
    cases = [("utf8", "naïve", "utf-8"), ("windows-874", "สวัสดีครับ", "cp874"), ("x-gbk", "你好，世界", "gbk"),
             ("gb2312", "你好，世界", "gb2312"), ("big5", "您好，世界", "big5"), ("ISO-8859-15", "5 €", "iso8859_15")]
    for label, text, codec in cases:
        m = parse(mail(f"From: a@example.test\nContent-Type: text/plain; charset=\"{label}\"", text.encode(codec)))
        assert m.text == text, label


# --- ruby-mail: attachments, forwards, HTML, odd encodings -----------------------------------------

def test_rfc2231_and_encoded_word_filenames():
    """Attachment names in RFC 2231 (with continuations and a charset), in RFC 2047 encoded-words
    (quoted or not), raw 8-bit, and from Content-Location all come out decoded."""
    assert [a.filename for a in ruby("multi_charset/japanese_attachment_long_name.eml").attachments] == [
        "かきくけこ" * 5 + ".txt"]
    assert [a.filename for a in ruby("multi_charset/japanese_attachment.eml").attachments] == ["てすと.txt"]
    assert [a.filename for a in ruby("attachment_emails/attachment_with_base64_encoded_name.eml").attachments] == [
        "This is a test.pdf"]
    assert [a.filename for a in ruby("attachment_emails/attachment_with_quoted_filename.eml").attachments] == [
        "Eelanalüüsi päring.jpg"]
    assert [a.filename for a in ruby("attachment_emails/attachment_nonascii_filename.eml").attachments] == ["ciële.txt"]
    assert [a.filename for a in ruby("attachment_emails/attachment_content_location.eml").attachments] == [
        "Photo25.jpg"]
    odd = ruby("attachment_emails/attachment_with_encoded_name.eml").attachments[0].filename
    assert odd.startswith("01 Quien Te Dij") and odd.endswith("at. Pitbull.mp3")


def test_attachment_content_is_decoded():
    """The PDF attachment is the decoded bytes, with its size and type."""
    m = ruby("attachment_emails/attachment_pdf.eml")
    (pdf,) = m.attachments
    assert (pdf.filename, pdf.content_type, pdf.dropped_reason) == ("broken.pdf", "application/pdf", None)
    assert pdf.content.startswith(b"%PDF-1.4") and pdf.size == len(pdf.content)
    assert m.subject == "Another PDF with 🎉 Unicode chars in it 🍿"


def test_message_rfc822_attachments_appear_in_forwarded():
    """An attached message is parsed (once, from the same tree) into ``forwarded``, with its own parts."""
    m = ruby("attachment_emails/attachment_message_rfc822.eml")
    assert m.text.startswith("This is the first part.")
    (fwd,) = m.forwarded
    assert fwd.subject == "Another PDF" and fwd.from_addr == "xxxx@xxxx.com"
    assert fwd.text.startswith("Just attaching another PDF")
    assert [a.filename for a in fwd.attachments] == ["broken.pdf"]


def test_bounce_report_exposes_report_and_original():
    """multipart/report: flagged with its report-type; the returned message is in ``forwarded``; the
    delivery-status part is kept as an attachment for the classifier."""
    m = ruby("multipart_report_emails/multi_address_bounce1.eml")
    assert m.is_multipart_report and m.report_type == "delivery-status"
    assert m.from_addr == "MAILER-DAEMON@lvmail01.LL.com"
    assert m.forwarded[0].message_id == "<118707422.15521266992174819.JavaMail.root@lvmail01>"
    status = [a for a in m.attachments if a.content_type == "message/delivery-status"]
    assert status and b"Reporting-MTA:" in status[0].content
    headers_only = ruby("multipart_report_emails/report_530.eml")
    assert headers_only.forwarded and headers_only.forwarded[0].message_id  # from text/rfc822-headers


def test_attachment_only_mail_has_empty_text_and_the_attachment():
    """A message that is only an attachment gives text "" (not an error) and the attachment."""
    m = ruby("attachment_emails/attachment_only_email.eml")
    assert m.text == "" and m.unreadable_reason is None
    (att,) = m.attachments
    assert (att.filename, att.content_type) == ("blah.gz", "application/x-gzip") and att.size > 0


def test_html_only_message_yields_readable_text():
    """HTML-only mail (here an alternative with only an HTML part, and a single text/html) is converted."""
    m = ruby("error_emails/content_transfer_encoding_text-html.eml")
    assert "You have qualified for the lowest rate in years." in m.text
    assert "<p>" not in m.text and m.html and "<p>" in m.html
    single = ruby("error_emails/multiple_invalid_content_dispositions.eml")
    assert single.text.strip() == "foo"


def test_plain_part_is_preferred_over_html():
    """multipart/alternative: the text/plain part is the text; the HTML part is kept in ``html``."""
    m = ruby("mime_emails/raw_email_with_illegal_boundary.eml")
    assert m.text == "Hello\nThis is an outlook test\n\nSo there.\n\nMe.\n"
    assert m.html.startswith("<!DOCTYPE HTML")


def test_nul_bytes_vanish():
    """NUL bytes in a ruby-mail fixture's body (raw and base64-encoded) and headers are removed."""
    need_corpus()
    raw = (RUBY / "plain_emails" / "basic_email.eml").read_bytes()
    head, _, body = raw.partition(b"\r\n\r\n")
    m = parse(head.replace(b"Subject: Testing 123", b"Subject: Testing\x00 123") + b"\r\n\r\n"
              + body.replace(b"Plain", b"Pl\x00ain"))
    assert "\x00" not in m.text and "Plain email." in m.text and m.subject == "Testing 123"
    encoded = parse(mail("From: a@example.test\nContent-Transfer-Encoding: base64",
                         base64.encodebytes(b"a\x00b\x00\x00c")))
    assert encoded.text == "abc"


def test_content_transfer_encoding_oddities():
    """``7-bit``, empty, ``plain``, ``quoted printable`` (space) and ``x-uuencode`` values are read."""
    assert "DISCOVER" in ruby("error_emails/content_transfer_encoding_7-bit.eml").text
    assert "Exciting Easter Investor Alert" in ruby("error_emails/content_transfer_encoding_plain.eml").text
    assert ruby("error_emails/content_transfer_encoding_empty.eml").html
    assert ruby("error_emails/content_transfer_encoding_qp_with_space.eml").text.startswith("If you're in need")
    uu = ruby("error_emails/content_transfer_encoding_x_uuencode.eml")
    assert uu.text.startswith("Attached are the comments")
    assert [a.filename for a in uu.attachments] == ["PGP_Cmts_on_12-14-01_Pkg.doc"]
    qp = parse(mail("From: a@example.test\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: "
                    "Quoted-Printable;", b"caf=C3=A9 =\r\ncr=C3=A8me"))
    assert qp.text == "café crème"


def test_empty_bodies_give_empty_text():
    """A missing body (headers only, or a multipart with no parts) is text "", not an error."""
    m = ruby("error_emails/missing_body.eml")
    assert m.text.strip() == "" and m.unreadable_reason is None and m.subject == "REDACTED"
    bare = parse(b"From: a@example.test\r\nSubject: nothing\r\n\r\n")
    assert (bare.text, bare.subject, bare.unreadable_reason) == ("", "nothing", None)
    no_separator = parse(b"From: a@example.test\r\nSubject: nothing")
    assert no_separator.text == "" and no_separator.subject == "nothing"


def test_addresses_dates_and_ids_from_messy_headers():
    """Unparsable From falls back to the address found; two From headers keep the first; dates are
    aware or None; References keeps only valid ids; headers are looked up case-insensitively."""
    multi = ruby("plain_emails/raw_email_multiple_from.eml")
    assert multi.from_addr == "tim@powerupdev.com"
    assert ruby("rfc2822/example10.eml").from_addr == "pete@silly.test"  # comments inside the address
    assert ruby("plain_emails/mix_caps_content_type.eml").from_addr == "bb@bug.com"
    assert ruby("error_emails/cant_parse_from.eml").from_addr == "News@InsideApple.Apple.com"
    assert ruby("plain_emails/raw_email_with_bad_date.eml").date is None
    good = ruby("rfc2822/example06.eml")
    assert good.date == dt.datetime(1997, 11, 21, 16, 1, 10, tzinfo=dt.timezone.utc)
    assert good.in_reply_to == "<1234@local.machine.example>" and good.message_id == "<3456@example.net>"
    assert ruby("error_emails/multiple_references_with_one_invalid.eml").references == ["<foo@bar.net>",
                                                                                        "<baz@bar.net>"]
    group = ruby("rfc2822/example03.eml")
    assert group.cc == ["boss@nil.test", "sysservices@example.net"]
    h = good.headers
    assert h.get("MESSAGE-ID") == h.get("message-id") == "<3456@example.net>"
    assert h.get_all("x-none") == [] and "In-Reply-To" in h


def test_obsolete_space_before_colon_headers():
    """RFC 2822 Appendix A.6.3 style ``Subject     : x`` header fields are read as fields."""
    m = ruby("rfc2822/example13.eml")
    assert m.from_addr == "jdoe@machine.example"


# --- limits, uuencode, TNEF, nesting ---------------------------------------------------------------

def _with_attachments(*sizes: int) -> bytes:
    parts = [b"--B\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n"]
    for i, size in enumerate(sizes):
        parts.append(f"--B\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; "
                     f"filename=f{i}.bin\r\nContent-Transfer-Encoding: base64\r\n\r\n".encode()
                     + base64.encodebytes(bytes([i]) * size))
    return mail("From: a@example.test\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=B",
                b"".join(parts) + b"--B--\r\n")


def test_attachment_over_the_limit_is_recorded_as_dropped():
    """An attachment larger than max_attachment_bytes is listed with its size, content None and a
    dropped_reason; one under the limit is kept."""
    m = parse(_with_attachments(100, 5000), max_attachment_bytes=1000)
    small, big = m.attachments
    assert small.content == b"\x00" * 100 and small.dropped_reason is None
    assert big.filename == "f1.bin" and big.content is None and "limit" in big.dropped_reason
    assert 4900 <= big.size <= 5100
    assert m.text.strip() == "see attached"


def test_attachments_over_the_total_limit_are_dropped():
    """Attachments are kept until max_total_attachments would be passed; later ones are dropped."""
    m = parse(_with_attachments(600, 600, 300), max_attachment_bytes=1000, max_total_attachments=1000)
    kept = [a.filename for a in m.attachments if a.content is not None]
    dropped = [a.filename for a in m.attachments if a.dropped_reason]
    assert kept == ["f0.bin", "f2.bin"] and dropped == ["f1.bin"]


def test_uuencoded_block_in_plain_body_becomes_an_attachment():
    """``begin 644 name`` ... ``end`` in a text/plain body is extracted and removed from the text."""
    payload = bytes(range(256)) * 3
    lines = b"".join(binascii.b2a_uu(payload[i:i + 45]) for i in range(0, len(payload), 45))
    body = b"Hello, the log is attached.\n\nbegin 644 server.log\n" + lines + b"`\nend\n\nRegards\n"
    m = parse(mail("From: a@example.test\nContent-Type: text/plain", body))
    (att,) = m.attachments
    assert att.filename == "server.log" and att.content == payload
    assert m.text.startswith("Hello, the log is attached.") and m.text.rstrip().endswith("Regards")
    assert "begin 644" not in m.text and "end\n" not in m.text
    prose = parse(mail("From: a@example.test", "We begin 644 tests today.\nbegin 644 plans\nnot uuencoded text\nend\n"))
    assert prose.attachments == [] and "not uuencoded text" in prose.text


def test_x_uuencode_part_is_decoded():
    """A MIME part with Content-Transfer-Encoding: x-uuencode gives the decoded attachment."""
    lines = binascii.b2a_uu(b"quarterly figures")
    body = (b"--B\r\nContent-Type: text/plain\r\n\r\nsee file\r\n--B\r\nContent-Type: application/octet-stream; "
            b"name=q.txt\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\nbegin 600 q.txt\r\n"
            + lines.replace(b"\n", b"\r\n") + b"`\r\nend\r\n--B--\r\n")
    m = parse(mail("From: a@example.test\nContent-Type: multipart/mixed; boundary=B", body))
    assert [(a.filename, a.content) for a in m.attachments] == [("q.txt", b"quarterly figures")]


def test_winmail_dat_is_kept_undecoded_with_a_note():
    """application/ms-tnef (winmail.dat) stays an attachment as sent; a note says it was not decoded."""
    body = (b"--B\r\nContent-Type: text/plain\r\n\r\nHi\r\n--B\r\n"
            b"Content-Type: application/ms-tnef; name=winmail.dat\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n" + base64.encodebytes(b"\x78\x9f\x3e\x22TNEF") + b"--B--\r\n")
    m = parse(mail("From: a@example.test\nContent-Type: multipart/mixed; boundary=B", body))
    (att,) = m.attachments
    assert (att.filename, att.content_type, att.content) == ("winmail.dat", "application/ms-tnef",
                                                             b"\x78\x9f\x3e\x22TNEF")
    assert any("TNEF" in d for d in m.defects)


def test_deep_mime_nesting_is_bounded_and_fast():
    """Thousands of nested multiparts neither raise nor take long; the nesting limit is recorded."""
    depth = 3000
    opening = b"".join(f"--b{i}\r\nContent-Type: multipart/mixed; boundary=b{i + 1}\r\n\r\n".encode()
                       for i in range(depth))
    body = opening + b"--b%d\r\nContent-Type: text/plain\r\n\r\ndeep\r\n" % depth
    start = time.perf_counter()
    m = parse(mail("From: a@example.test\nContent-Type: multipart/mixed; boundary=b0", body))
    assert time.perf_counter() - start < 5
    assert isinstance(m, ParsedMail) and m.unreadable_reason is None and m.defects


def test_nested_forwards_are_bounded():
    """message/rfc822 inside message/rfc822 ... is followed to a fixed depth, then noted."""
    inner = mail("From: z@example.test\nSubject: level 12", "bottom")
    for level in range(11, -1, -1):
        inner = mail(f"From: a{level}@example.test\nSubject: level {level}\nContent-Type: message/rfc822", inner)
    m, seen = parse(inner), 0
    node = m
    while node.forwarded:
        node, seen = node.forwarded[0], seen + 1
    assert 1 <= seen < 12 and any("forwarded" in d for d in node.defects + m.defects + _all_defects(m))


def _all_defects(m: ParsedMail) -> list[str]:
    out = list(m.defects)
    for f in m.forwarded:
        out += _all_defects(f)
    return out


# --- never raises ----------------------------------------------------------------------------------

def test_unusable_inputs_give_a_reason_and_odd_types_do_not_raise():
    """Empty, whitespace and non-bytes inputs are reported unreadable; a str is accepted."""
    assert parse(b"").unreadable_reason
    assert parse(b"  \r\n\t").unreadable_reason
    assert parse(None).unreadable_reason  # type: ignore[arg-type]
    assert parse(5).unreadable_reason  # type: ignore[arg-type]
    assert parse("Subject: hi\n\nthere").text == "there"  # type: ignore[arg-type]
    assert parse(b"\x00\xff\xfe garbage without headers").unreadable_reason is None


def test_mutated_corpus_messages_never_raise():
    """Truncated, byte-flipped and spliced versions of corpus messages (seeded) all parse."""
    need_corpus()
    rng = random.Random(4)
    seeds = [data for _, data in corpus_files("ruby-mail") if data][:60]
    for data in seeds:
        for _ in range(5):
            mutated = bytearray(data)
            for _ in range(rng.randint(1, 8)):
                if not mutated:
                    break
                pos = rng.randrange(len(mutated))
                choice = rng.random()
                if choice < 0.4:
                    mutated[pos] = rng.randrange(256)
                elif choice < 0.7:
                    mutated[pos:pos] = rng.choice([b"\r\n--", b"=?", b"\x00", b"=\r\n", b"\r\n\r\n", b"begin 644 x\n"])
                else:
                    del mutated[pos:pos + rng.randint(1, 50)]
            for variant in (bytes(mutated), bytes(mutated[: rng.randrange(len(mutated) + 1)])):
                result = parse(variant)
                assert isinstance(result, ParsedMail) and isinstance(result.text, str)
                assert not any(d.startswith("internal error") for d in result.defects), result.defects
