"""The staff grammar: usage lines become commands, and what staff type becomes typed arguments."""
import datetime as dt

import pytest

from handlers.errors import InvalidInput
from handlers.staff.grammar import BY_NAME, COMMANDS, declare, parse, tokenize

# The contract from the interface, one command per line.
INTERFACE_USAGES = """
help [COMMAND]
account show ACCOUNT
account history ACCOUNT
ticket list [--open|--archived|--all] [--account ACCOUNT]
ticket show T
ticket reply T TEXT
ticket note T TEXT
ticket assign T [@staff|me]
ticket close T
ticket archive T
ticket unarchive T
invoice list [--due|--overdue|--paid|--all] [--account ACCOUNT]
invoice show N
invoice create ACCOUNT AMOUNT TEXT [--tax RATE] [--due DATE]
invoice paid N [AMOUNT] [--ref REF]
invoice remind N
invoice void N [REASON]
payment record ACCOUNT AMOUNT [--invoices N,N,...] [--ref REF]
charge add ACCOUNT AMOUNT TEXT
credit-limit ACCOUNT AMOUNT
suspend ACCOUNT|SERVICE [--tell-client] [REASON]
unsuspend ACCOUNT|SERVICE
renewals due [--days 90] [--account ACCOUNT]
renewal link ACCOUNT
renewal done SERVICE [--expires DATE]
forecast [--days 1]
hold ACCOUNT [--until DATE] [REASON]
unhold ACCOUNT
inbox [--quarantined]
inbox retry ID
digest
team list
team add SLACK_USER_ID ROLE
team remove SLACK_USER_ID
payment list ACCOUNT
payment void P REASON
""".strip().splitlines()

# Interface lines we extend: how and when money came in, and a way back to "no credit limit".
EXTENDED = {
    "invoice paid N [AMOUNT] [--ref REF]": "invoice paid N [AMOUNT] [--ref REF] [--method METHOD] [--received DATE]",
    "payment record ACCOUNT AMOUNT [--invoices N,N,...] [--ref REF]":
        "payment record ACCOUNT AMOUNT [--invoices N,N,...] [--ref REF] [--method METHOD] [--received DATE]",
    "credit-limit ACCOUNT AMOUNT": "credit-limit ACCOUNT AMOUNT|none",
}

# Ours beyond the interface: parking a ticket, attaching a held sender to an account, emailing a
# renewal confirmation request with an activation code, and switching automatic renewal.
EXTENSIONS = ["ticket hold T", "inbox attach ID ACCOUNT", "renewal confirm ACCOUNT|SERVICE",
              "renewal auto ACCOUNT|SERVICE on|off"]


def refused(words):
    with pytest.raises(InvalidInput) as info:
        parse(words)
    return info.value


def test_every_interface_command_is_declared_by_its_usage_line():
    """The table holds exactly the interface's usage lines plus our named extensions, each once."""
    wanted = [EXTENDED.get(u, u) for u in INTERFACE_USAGES] + EXTENSIONS
    assert sorted(c.usage for c in COMMANDS) == sorted(wanted)
    assert len(BY_NAME) == len(COMMANDS)


def test_usage_syntax_is_parsed_into_parameters():
    """Literal words, required/optional/alternative positionals, flag groups, options with metavar or default."""
    cmd = declare("x", "thing do ACCOUNT|SERVICE [AMOUNT] [--a|--b] [--quiet] [--days 7] [--ref REF] [REASON]",
                  "summary", ("admin",))
    assert cmd.words == ("thing", "do")
    assert [(p.key, p.required, p.rest) for p in cmd.positionals] == [
        ("account_or_service", True, False), ("amount", False, False), ("reason", False, True)]
    assert [(f.name, f.group) for f in cmd.flags] == [("--a", ("a", "b")), ("--b", ("a", "b")),
                                                      ("--quiet", ("quiet",))]
    assert [(o.key, o.metavar, o.default) for o in cmd.options] == [("days", "DAYS", 7), ("ref", "REF", None)]


def test_a_malformed_usage_line_fails_at_declaration():
    """A required positional after an optional one cannot be parsed unambiguously, so it is refused."""
    with pytest.raises(ValueError):
        declare("x", "thing [A] B", "summary", ("admin",))


def test_roles_and_confirmation_follow_the_interface():
    """Destructive commands ask for confirmation; changes need a role that permits them; reads are for everyone."""
    assert {c.name for c in COMMANDS if c.destructive} == {"suspend", "invoice void", "payment record", "payment void"}
    assert BY_NAME["team add"].roles == ("admin",) and BY_NAME["team remove"].roles == ("admin",)
    assert BY_NAME["team list"].allows("readonly")
    assert not BY_NAME["digest"].allows("support") and BY_NAME["digest"].allows("billing")
    assert BY_NAME["ticket reply"].allows("support") and not BY_NAME["ticket reply"].allows("billing")
    assert BY_NAME["suspend"].allows("billing") and not BY_NAME["suspend"].allows("support")
    assert all(c.allows("admin") for c in COMMANDS)
    for c in COMMANDS:
        assert c.allows("readonly") == (not c.writes), c.name


def test_words_are_case_insensitive_and_the_longest_command_wins():
    """`Inbox Retry 5` is `inbox retry`, not `inbox` with stray words."""
    parsed = parse("Inbox Retry 5")
    assert (parsed.command.name, parsed.args) == ("inbox retry", {"id": 5})
    assert parse("inbox").args == {"quarantined": False}


def test_flags_and_options_may_come_anywhere_after_the_command_words():
    """Options before, between and after positionals give the same arguments."""
    expected = {"n": "INV-1", "amount": "12.50", "ref": "BANK-7", "method": None, "received": None}
    for words in ("invoice paid INV-1 12.50 --ref BANK-7", "invoice paid --ref BANK-7 INV-1 12.50",
                  "invoice paid INV-1 --ref BANK-7 12.50", "invoice paid INV-1 12.50 --ref=BANK-7"):
        assert parse(words).args == expected, words
    a = parse("invoice list --overdue --account acme").args
    b = parse("invoice list --account=acme --overdue").args
    assert a == b == {"due": False, "overdue": True, "paid": False, "all": False, "account": "acme"}


def test_defaults_come_from_the_usage_line():
    """`[--days 90]` means 90 when not given; an optional positional is None when absent."""
    assert parse("renewals due").args == {"days": 90, "account": None}
    assert parse("renewals due --days 30").args["days"] == 30
    assert parse("forecast").args == {"days": 1}
    assert parse("invoice paid INV-1").args == {"n": "INV-1", "amount": None, "ref": None, "method": None,
                                                "received": None}
    assert parse("ticket assign 3").args == {"t": 3, "staff_or_me": None}


def test_exclusive_flags_refuse_each_other_and_repeats_are_refused():
    """`--due --all` is ambiguous; `--ref a --ref b` too."""
    assert "exclude each other" in refused("invoice list --due --all").message
    assert "given twice" in refused("invoice paid INV-1 --ref a --ref b").message
    assert "takes no value" in refused("invoice list --due=yes").message
    assert "needs a value" in refused("invoice paid INV-1 --ref").message


def test_final_text_takes_the_rest_of_the_line_as_typed():
    """TEXT and REASON keep every word, apostrophes and line breaks, exactly as typed."""
    assert parse("ticket reply 7 hello there,  friend").args == {"t": 7, "text": "hello there,  friend"}
    typed = "ticket note T-7 it's fine,\nwe don't charge for that"
    assert parse(typed).args["text"] == "it's fine,\nwe don't charge for that"
    assert parse("invoice void INV-9 sent twice by mistake").args == {"n": "INV-9", "reason": "sent twice by mistake"}
    assert parse("charge add acme 5.00 setup fee").args == {"account": "acme", "amount": "5.00",
                                                            "text": "setup fee"}
    assert parse("invoice void INV-9").args["reason"] is None


def test_options_are_recognised_inside_a_reason_but_text_may_mention_dashes():
    """`hold` has an option, so it is taken out of the reason; `ticket reply` has none, so --words are text."""
    args = parse("hold acme waiting for the bank --until 2026-12-24").args
    assert args == {"account": "acme", "reason": "waiting for the bank", "until": dt.date(2026, 12, 24)}
    assert parse("ticket reply 7 run it with --force please").args["text"] == "run it with --force please"
    assert parse("ticket reply 7 -- --until is not an option here").args["text"] == "--until is not an option here"


def test_shell_style_quoting_and_the_fallback_for_unbalanced_quotes():
    """Quotes group words; an unbalanced quote falls back to plain words instead of failing."""
    assert parse('ticket reply 7 "hello there"').args["text"] == "hello there"
    assert parse('account show "Acme Ltd"').args == {"account": "Acme Ltd"}
    assert parse("account show 'Acme Ltd'").args == {"account": "Acme Ltd"}
    assert parse("ticket note 7 it's \"odd").args["text"] == "it's \"odd"
    assert parse("account show \u201cAcme Ltd\u201d").args == {"account": "Acme Ltd"}  # Slack's smart quotes
    assert [t.value for t in tokenize("a 'b c' d")] == ["a", "b c", "d"]


def test_a_list_of_words_from_a_shell_is_taken_as_is():
    """`renewdesk staff ticket reply 7 "hello there"` arrives as argv: one word per element."""
    assert parse(["ticket", "reply", "7", "hello there"]).args == {"t": 7, "text": "hello there"}
    assert parse(["ticket", "reply", "7", "hello", "there"]).args["text"] == "hello there"


def test_alternatives_for_one_positional():
    """`ACCOUNT|SERVICE` and `[@staff|me]` each fill one argument."""
    assert parse("suspend acme.test late payer").args == {"account_or_service": "acme.test", "reason": "late payer",
                                                          "tell_client": False}
    assert parse("unsuspend acme").args == {"account_or_service": "acme"}
    assert parse("ticket assign 3 me").args["staff_or_me"] == "me"
    assert parse("ticket assign 3 <@U0ABC|ann>").args["staff_or_me"] == "U0ABC"
    assert parse("ticket assign 3 @u0abc").args["staff_or_me"] == "U0ABC"


def test_ticket_ids_invoice_numbers_and_other_types():
    """T may be written T-12, #12 or 12; N stays a string; amounts are decimals, may be negative for limits."""
    for written in ("12", "#12", "T-12", "t12", "#T-12"):
        assert parse(f"ticket show {written}").args == {"t": 12}, written
    assert parse("invoice show 1001").args == {"n": "1001"}
    assert parse("credit-limit acme -50.00").args["amount_or_none"] == "-50.00"
    assert parse("credit-limit acme None").args["amount_or_none"] == "none"
    assert parse("payment void P-12 bounced cheque").args == {"p": 12, "reason": "bounced cheque"}
    assert parse("team add u0abc Billing").args == {"slack_user_id": "U0ABC", "role": "billing"}
    assert parse("payment record acme 100 --invoices INV-1,INV-2").args["invoices"] == ["INV-1", "INV-2"]


@pytest.mark.parametrize("words, problem", [
    ("ticket show abc", "T: not a ticket id"),
    ("ticket show 0", "T: not a ticket id"),
    ("invoice paid INV-1 12,5x", "AMOUNT: not an amount"),
    ("invoice paid INV-1 NaN", "AMOUNT: not an amount"),
    ("hold acme --until tomorrow", "--until: not a date"),
    ("hold acme --until 2026-02-30", "--until: day is out of range"),
    ("renewals due --days 0", "--days: not a positive whole number"),
    ("renewals due --days -3", "--days: not a positive whole number"),
    ("forecast --days soon", "--days: not a positive whole number"),
    ("team add U1 boss", "ROLE: not a role"),
    ("team add U!1 admin", "SLACK_USER_ID: not a Slack user id"),
    ("inbox retry x", "ID: not a positive whole number"),
])
def test_values_of_the_wrong_type_are_refused_with_the_usage(words, problem):
    """A wrong value names the parameter and what is wrong, and the hint is that command's usage."""
    err = refused(words)
    assert problem in err.message
    assert err.hint == BY_NAME[parse_name(words)].hint()


def parse_name(words):
    return next(c.name for c in sorted(COMMANDS, key=lambda c: -len(c.words))
                if words.lower().split()[:len(c.words)] == list(c.words))


@pytest.mark.parametrize("words, nearest", [
    ("invoce list", "invoice list"),
    ("tikcet show 5", "ticket show"),
    ("team ad U1 admin", "team add"),
    ("forcast", "forecast"),
    ("inbox retyr 5", "inbox retry"),
    ("acount show acme", "account show"),
    ("renewal due", "renewals due"),
])
def test_misspelt_commands_answer_with_the_nearest_usage(words, nearest):
    """Unknown words answer with the usage line of the nearest command."""
    err = refused(words)
    assert err.hint == "usage: " + BY_NAME[nearest].usage
    assert f"`{nearest}`" in err.message


def test_the_documented_example_hint():
    """`invoce list` hints exactly the invoice list usage line."""
    assert refused("invoce list").hint == "usage: invoice list [--due|--overdue|--paid|--all] [--account ACCOUNT]"


def test_missing_or_extra_arguments_answer_with_the_usage():
    """A missing positional, a stray word, an unknown option: each names the problem and shows the usage."""
    err = refused("invoice paid")
    assert (err.message, err.hint) == ("`invoice paid` needs N",
                                       "usage: " + EXTENDED["invoice paid N [AMOUNT] [--ref REF]"])
    assert refused("ticket reply 7").message == "`ticket reply` needs TEXT"
    err = refused("account show Acme Ltd")
    assert "unexpected `Ltd`" in err.message and "quotes" in err.message
    err = refused("invoice list --overdu")
    assert "did you mean --overdue?" in err.message and err.hint == BY_NAME["invoice list"].hint()
    assert "did you mean" not in refused("team list --frobnicate").message


def test_a_group_word_alone_lists_its_subcommands():
    """`invoice` by itself says which words may follow."""
    err = refused("invoice")
    assert "list, show, create, paid, remind, void" in err.message and err.hint.startswith("usage: invoice ")


def test_empty_input_and_help_flags_mean_help():
    """Nothing typed is `help`; `COMMAND --help` is that command's help."""
    for words in ("", "   ", []):
        parsed = parse(words)
        assert (parsed.command.name, parsed.args) == ("help", {"command": None})
    parsed = parse("invoice paid --help")
    assert (parsed.command.name, parsed.args) == ("help", {"command": "invoice paid"})
    assert parse("help invoice paid").args == {"command": "invoice paid"}
