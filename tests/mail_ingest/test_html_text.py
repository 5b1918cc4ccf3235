"""html_to_text: readable plain text from HTML mail, and never an exception."""
from __future__ import annotations

import random

import pytest

from mail_ingest.html_text import QUOTE_MARKER, html_to_text


def test_blocks_and_breaks_become_lines_and_paragraphs():
    """<p> is a paragraph, <div> a line, <br> a newline; runs of empty lines collapse to one."""
    html = "<p>First para</p><p>Second</p><div>line one</div><div>line two</div>a<br>b<br><br><br><br>c"
    assert html_to_text(html) == "First para\n\nSecond\n\nline one\nline two\na\nb\n\nc"


def test_gmail_style_divs_with_br_lines():
    """Gmail writes one <div> per line and <div><br></div> for an empty line; a <br> that ends a
    block adds nothing."""
    html = "<div>Hi. I am fine.</div><div><br></div><div>Thanks,</div><div>Alex<br></div><div>PS</div>"
    assert html_to_text(html) == "Hi. I am fine.\n\nThanks,\nAlex\nPS"


def test_whitespace_is_collapsed_and_trimmed():
    """Source newlines and indentation collapse to single spaces; lines carry no edge spaces."""
    html = "<p>\n   Hello   <b>big</b>\n\n   world  </p>\n\n\n<p>  next </p>"
    assert html_to_text(html) == "Hello big world\n\nnext"


def test_unordered_lists_use_dashes_and_nest():
    """<ul> items start with "- ", nested lists are indented, unclosed <li> is closed by the next."""
    html = "<p>Steps:</p><ul><li>one<li>two<ul><li>two a</li></ul></li><li>three</ul><p>done</p>"
    assert html_to_text(html) == "Steps:\n\n- one\n- two\n  - two a\n- three\n\ndone"


def test_ordered_lists_are_numbered_and_item_paragraphs_stay_on_the_bullet():
    """<ol> items are numbered; a <p> inside an item does not leave a lone bullet behind."""
    html = "<ol><li>first</li><li><p>second</p></li><li></li></ol>"
    assert html_to_text(html) == "1. first\n2. second"


def test_links_show_the_url_only_when_it_adds_something():
    """text (url) when the target differs from the text; mailto shows the bare address; bare
    URLs, anchors and image-only links add nothing."""
    html = (
        '<p><a href="https://example.com/renew">Renew now</a> '
        '<a href="https://example.com/">example.com</a> '
        '<a href="mailto:sales@example.com?subject=Hi">Sales</a> '
        '<a href="mailto:sales@example.com">sales@example.com</a> '
        '<a href="#top">top</a> <a href="https://example.com/x"><img src="logo.png"></a></p>'
    )
    assert html_to_text(html) == (
        "Renew now (https://example.com/renew) example.com Sales (sales@example.com) "
        "sales@example.com top"
    )


def test_tables_are_written_row_by_row():
    """Each row is a line, its cells joined with " | "; an empty cell adds no separator."""
    html = (
        "<table><tr><th>Domain</th><th>Expires</th></tr>"
        "<tr><td>example.com</td><td>2025-01-01</td></tr>"
        "<tr><td></td><td>only</td></tr></table><p>after</p>"
    )
    assert html_to_text(html) == "Domain | Expires\nexample.com | 2025-01-01\nonly\n\nafter"


def test_layout_tables_with_block_cells_do_not_get_separators():
    """Cells that hold blocks (layout tables) come out as lines, not as " | " soup."""
    html = "<table><tr><td><div>Hello</div></td><td><div>World</div></td></tr></table>"
    assert html_to_text(html) == "Hello\nWorld"


def test_entities_are_decoded():
    """Named, decimal and hex entities are decoded; &nbsp; is a space; unknown ones stay."""
    html = "<p>Fish &amp; chips &lt;3 &eacute;t&eacute; &#8364;5&nbsp;net &#x1F600; &bogus;</p>"
    assert html_to_text(html) == "Fish & chips <3 été €5 net 😀 &bogus;"


def test_script_style_head_and_hidden_content_are_dropped():
    """Nothing from head/title/style/script, nor from display:none preheaders, reaches the text."""
    html = (
        "<html><head><title>Title</title><style>p {color: red}</style></head>"
        "<body><script>alert('x')</script><div style='display: none'>preheader</div>"
        "<p>Body</p><noscript>enable js</noscript></body></html>"
    )
    assert html_to_text(html) == "Body"


def test_blockquotes_are_prefixed_per_level():
    """<blockquote> content gets "> " per nesting level, empty quoted lines keep their ">"."""
    html = "<p>Hi</p><blockquote>quoted<blockquote>deeper</blockquote>back</blockquote><p>after</p>"
    assert html_to_text(html) == "Hi\n\n> quoted\n>\n> > deeper\n>\n> back\n\nafter"


def test_attribution_before_a_blockquote_is_quoted_with_it():
    """Gmail's gmail_attr (and Thunderbird's moz-cite-prefix) line goes with the quote it
    introduces, so the quote and its attribution are one quoted block."""
    html = (
        '<div dir="ltr">Merci</div><div class="gmail_quote"><div class="gmail_attr">'
        "Le lun. 15 janv. 2024 à 14:30, X &lt;x@example.fr&gt; a écrit :<br></div>"
        '<blockquote class="gmail_quote">ancien</blockquote></div>'
    )
    assert html_to_text(html) == (
        "Merci\n\n> Le lun. 15 janv. 2024 à 14:30, X <x@example.fr> a écrit :\n>\n> ancien"
    )


@pytest.mark.parametrize(
    "boundary",
    [
        '<div id="divRplyFwdMsg">',
        '<div id="x_divRplyFwdMsg">',
        '<div id="appendonsend">',
        '<span id="OLK_SRC_BODY_SECTION">',
        '<div class="yahoo_quoted">',
    ],
)
def test_quoted_containers_get_the_marker_line(boundary):
    """Containers that start a quoted message without a blockquote are announced by
    QUOTE_MARKER on its own line, right before their content."""
    tag = boundary[1:].split()[0]
    html = f"<div>Reply</div>{boundary}From: X<br>Sent: today</{tag}>"
    assert html_to_text(html) == f"Reply\n\n{QUOTE_MARKER}\nFrom: X\nSent: today"


def test_hotmail_and_zimbra_rules_are_markers_and_one_marker_is_enough():
    """hr#stopSpelling / hr#zwchr are quote starts; an Outlook appendonsend + hr + divRplyFwdMsg
    run yields a single marker."""
    assert html_to_text('Hi<hr id="stopSpelling">old') == f"Hi\n\n{QUOTE_MARKER}\nold"
    html = (
        '<div>Reply</div><div id="appendonsend"></div><hr>'
        '<div id="divRplyFwdMsg">From: X</div><div>old</div>'
    )
    assert html_to_text(html) == f"Reply\n\n{QUOTE_MARKER}\nFrom: X\nold"


def test_plain_hr_is_a_rule_line():
    """An ordinary <hr> is a "---" paragraph of its own."""
    assert html_to_text("<p>a</p><hr><p>b</p>") == "a\n\n---\n\nb"


def test_pre_keeps_its_whitespace():
    """<pre> keeps indentation and empty lines."""
    html = "<pre>  code\n    indented\n\n  end</pre><p>x</p>"
    assert html_to_text(html) == "  code\n    indented\n\n  end\n\nx"


def test_outlook_msonormal_paragraphs_are_lines():
    """Outlook writes every line as <p class=MsoNormal> (no margins) and an empty line as
    <p>&nbsp;</p>: lines and one empty line, not double spacing."""
    html = (
        '<p class=MsoNormal>Hi.<o:p></o:p></p><p class=MsoNormal><o:p>&nbsp;</o:p></p>'
        "<p class=MsoNormal>Thanks,<o:p></o:p></p><p class=MsoNormal>Alex<o:p></o:p></p>"
    )
    assert html_to_text(html) == "Hi.\n\nThanks,\nAlex"


def test_broken_html_is_read_like_a_browser_would():
    """Unclosed elements, stray end tags and a missing </table> neither raise nor lose text."""
    html = "<div><p>unclosed <b>bold <i>both</div><p>next</b> para<td>cell</td></table></span></p>tail"
    assert html_to_text(html) == "unclosed bold both\n\nnext para | cell\n\ntail"


@pytest.mark.parametrize(
    "html",
    [
        "",
        "<![ foo",
        "<!-- never closed",
        "<a href='x",
        "</>",
        "<div <p>x",
        "<![if !supportLists]>- <![endif]>item",
        "<" * 1000,
        "<div>" * 5000 + "deep" + "</div>" * 5000,
        "<blockquote>" * 3000 + "x",
        "<table>" + "<tr><td>" * 2000,
        "\x00<p>\x00nul</p>",
    ],
)
def test_malformed_input_never_raises(html):
    """Malformed, truncated or absurdly nested HTML returns a string and does not raise."""
    assert isinstance(html_to_text(html), str)


def test_deep_nesting_keeps_the_text():
    """Nesting beyond the depth cap still keeps the innermost text."""
    assert html_to_text("<div>" * 5000 + "deep" + "</div>" * 5000) == "deep"


def test_random_tag_soup_never_raises():
    """Random mixes of tags, entities and text (seeded) always convert."""
    rng = random.Random(4)
    pieces = [
        "<p>", "</p>", "<div>", "</div>", "<br>", "<blockquote>", "</blockquote>", "<ul>", "<li>",
        "</ul>", "<table>", "<tr>", "<td>", "</td>", "<a href='https://x.y'>", "</a>", "&amp;",
        "&#", "<!--", "-->", "<![", "<pre>", "</pre>", "text ", "<", ">", "\n", "<script>",
        "</script>", "<hr id=stopSpelling>", '<div id="divRplyFwdMsg">', "&nbsp;",
    ]
    for _ in range(300):
        html = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 60)))
        assert isinstance(html_to_text(html), str)
