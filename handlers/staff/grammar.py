"""The staff grammar: every `/desk` and `renewdesk staff` command, declared by its usage line."""
from __future__ import annotations

import difflib
import re
import shlex
from dataclasses import dataclass
from typing import Any, Sequence

from handlers.errors import InvalidInput
from handlers.staff.values import ROLES, TYPES, any_text

EVERYONE = ROLES
ADMIN, BILLING, SUPPORT, STAFF = ("admin",), ("admin", "billing"), ("admin", "support"), ("admin", "billing", "support")

REST_NAMES = ("TEXT", "REASON", "COMMAND")  # a final positional with one of these names takes the rest of the words


@dataclass(frozen=True)
class Positional:
    """``ACCOUNT``, ``[AMOUNT]``, ``ACCOUNT|SERVICE``, ``[@staff|me]``, a rest-of-line ``TEXT``."""
    key: str
    names: tuple[str, ...]
    required: bool
    rest: bool = False

    @property
    def metavar(self) -> str:
        return "|".join(self.names)


@dataclass(frozen=True)
class Flag:
    """``[--open]``; flags declared together (``[--a|--b]``) exclude each other."""
    name: str
    key: str
    group: tuple[str, ...]


@dataclass(frozen=True)
class Option:
    """``[--ref REF]`` or ``[--days 90]`` (the value written is the default)."""
    name: str
    key: str
    metavar: str
    default: Any = None


@dataclass(frozen=True)
class Command:
    """One command: its words, usage line, summary, who may run it, and its parameters."""
    words: tuple[str, ...]
    usage: str
    summary: str
    area: str
    roles: tuple[str, ...]
    writes: bool
    destructive: bool
    positionals: tuple[Positional, ...]
    flags: tuple[Flag, ...]
    options: tuple[Option, ...]

    @property
    def name(self) -> str:
        return " ".join(self.words)

    def allows(self, role: str) -> bool:
        return str(role) in self.roles

    def hint(self) -> str:
        return f"usage: {self.usage}"


@dataclass(frozen=True)
class Parsed:
    """A command and its arguments, converted to their types, with defaults filled in."""
    command: Command
    args: dict[str, Any]


def _convert(type_name: str, raw: str, label: str, command: Command | None) -> Any:
    try:
        return TYPES.get(type_name, any_text)(raw)
    except ValueError as exc:
        raise InvalidInput(f"{label}: {exc}: {raw!r}", hint=command.hint() if command else None) from None


# -- usage lines → commands -------------------------------------------------------------------

def _key(names: Sequence[str]) -> str:
    return "_or_".join(n.lstrip("@-").lower().replace("-", "_") for n in names)


def declare(area: str, usage: str, summary: str, roles: tuple[str, ...], *, writes: bool = False,
            destructive: bool = False) -> Command:
    """Build a :class:`Command` from its usage line; a malformed line fails at import."""
    words: list[str] = []
    positionals: list[Positional] = []
    flags: list[Flag] = []
    options: list[Option] = []
    for part in re.findall(r"\[[^\]]*\]|\S+", usage):
        optional = part.startswith("[")
        inner = part[1:-1].strip() if optional else part
        if optional and inner.startswith("--"):
            pieces = inner.split()
            if len(pieces) == 1:
                group = tuple(inner.split("|"))
                flags += [Flag(f, _key([f]), tuple(_key([g]) for g in group)) for f in group]
            else:
                name, value = pieces
                is_metavar = re.fullmatch(r"[A-Z][A-Z0-9_,.]*", value) is not None
                metavar = value if is_metavar else _key([name]).upper()
                default = None if is_metavar else _convert(metavar, value, name, None)
                options.append(Option(name, _key([name]), metavar, default))
        elif not optional and re.fullmatch(r"[a-z][a-z-]*", part) and not (positionals or flags or options):
            words.append(part)
        else:
            names = tuple(inner.split("|"))
            positionals.append(Positional(_key(names), names, required=not optional))
    if positionals and positionals[-1].names[0] in REST_NAMES:
        positionals[-1] = Positional(positionals[-1].key, positionals[-1].names, positionals[-1].required, True)
    first_optional = next((i for i, p in enumerate(positionals) if not p.required), len(positionals))
    if not words or any(p.required for p in positionals[first_optional:]):
        raise ValueError(f"bad usage line: {usage}")
    return Command(tuple(words), usage, summary, area, roles, writes or destructive, destructive,
                   tuple(positionals), tuple(flags), tuple(options))


AREAS = (("general", "General"), ("accounts", "Accounts"), ("tickets", "Tickets"), ("billing", "Billing"),
         ("services", "Suspensions and holds"), ("renewals", "Renewals and automation"),
         ("inbox", "Inbox"), ("team", "Team"))

COMMANDS: tuple[Command, ...] = (
    declare("general", "help [COMMAND]", "all commands, or one command's usage and who may use it", EVERYONE),
    declare("accounts", "account show ACCOUNT", "balance, credit limit, services, due invoices, open tickets, holds",
            EVERYONE),
    declare("accounts", "account history ACCOUNT", "services' status history, invoices, payments, emails sent",
            EVERYONE),
    declare("tickets", "ticket list [--open|--archived|--all] [--account ACCOUNT]",
            "tickets, open ones unless asked otherwise", EVERYONE),
    declare("tickets", "ticket show T", "a ticket with its messages", EVERYONE),
    declare("tickets", "ticket reply T TEXT", "emailed to the client, threaded; also shown in the Slack thread",
            SUPPORT, writes=True),
    declare("tickets", "ticket note T TEXT", "internal, never emailed", SUPPORT, writes=True),
    declare("tickets", "ticket assign T [@staff|me]", "assign to a staff member (default: you)", SUPPORT, writes=True),
    declare("tickets", "ticket hold T", "park a ticket; the client's next reply brings it back", SUPPORT, writes=True),
    declare("tickets", "ticket close T", "close a ticket", SUPPORT, writes=True),
    declare("tickets", "ticket archive T", "archive a ticket", SUPPORT, writes=True),
    declare("tickets", "ticket unarchive T", "bring an archived ticket back", SUPPORT, writes=True),
    declare("billing", "invoice list [--due|--overdue|--paid|--all] [--account ACCOUNT]",
            "invoices, due ones unless asked otherwise", EVERYONE),
    declare("billing", "invoice show N", "an invoice with its lines, tax and payments", EVERYONE),
    declare("billing", "invoice create ACCOUNT AMOUNT TEXT [--tax RATE] [--due DATE]",
            "an invoice for ad-hoc work: tax in percent, pay by DATE (default in 14 days); emailed", BILLING,
            writes=True),
    declare("billing", "invoice paid N [AMOUNT] [--ref REF] [--method METHOD] [--received DATE]",
            "records a payment; a partial amount leaves the rest due", BILLING, writes=True),
    declare("billing", "invoice remind N", "sends the reminder now", BILLING, writes=True),
    declare("billing", "invoice void N [REASON]", "void an invoice", BILLING, destructive=True),
    declare("billing", "payment record ACCOUNT AMOUNT [--invoices N,N,...] [--ref REF] [--method METHOD] "
            "[--received DATE]",
            "one payment spread over several invoices, oldest first unless listed", BILLING, destructive=True),
    declare("billing", "payment list ACCOUNT", "payments with their allocations, voided ones too", EVERYONE),
    declare("billing", "payment void P REASON", "reverses a payment: its invoices reopen, the ledger says why",
            BILLING, destructive=True),
    declare("billing", "charge add ACCOUNT AMOUNT TEXT", "manual charge, invoiced at once", BILLING, writes=True),
    declare("billing", "credit-limit ACCOUNT AMOUNT|none",
            "set the credit limit (may be negative), or none for no limit", BILLING, writes=True),
    declare("services", "suspend ACCOUNT|SERVICE [--tell-client] [REASON]",
            "emails the client; the reason stays internal unless --tell-client", BILLING,
            destructive=True),
    declare("services", "unsuspend ACCOUNT|SERVICE", "lift a suspension", BILLING, writes=True),
    declare("services", "hold ACCOUNT [--until DATE] [REASON]", "no automatic suspension or removal for that account",
            BILLING, writes=True),
    declare("services", "unhold ACCOUNT", "lift a hold", BILLING, writes=True),
    declare("renewals", "renewals due [--days 90] [--account ACCOUNT]", "services expiring soon", EVERYONE),
    declare("renewals", "renewal link ACCOUNT", "an audited link to that client's renewal page (acting for the client)",
            STAFF, writes=True),
    declare("renewals", "renewal confirm ACCOUNT|SERVICE", "email a confirmation request with an activation code",
            STAFF, writes=True),
    declare("renewals", "renewal auto ACCOUNT|SERVICE on|off", "renew and invoice, not ask", BILLING, writes=True),
    declare("renewals", "renewal done SERVICE [--expires DATE]",
            "staff completed a renewal by hand: the expiry moves forward", BILLING, writes=True),
    declare("renewals", "forecast [--days 1]", "what the automation will do: reminders, suspensions, removals",
            EVERYONE),
    declare("renewals", "digest", "the daily digest, now", BILLING, writes=True),
    declare("inbox", "inbox [--quarantined]", "inbound mail waiting or quarantined", EVERYONE),
    declare("inbox", "inbox retry ID", "process a stored message again", SUPPORT, writes=True),
    declare("inbox", "inbox attach ID ACCOUNT", "the held sender becomes a contact of ACCOUNT", SUPPORT, writes=True),
    declare("team", "team list", "staff and their roles", EVERYONE),
    declare("team", "team add SLACK_USER_ID ROLE", "add a staff member or change their role", ADMIN, writes=True),
    declare("team", "team remove SLACK_USER_ID", "remove a staff member", ADMIN, writes=True),
)

BY_NAME: dict[str, Command] = {c.name: c for c in COMMANDS}


# -- input → tokens ---------------------------------------------------------------------------

_SPACE = re.compile(r"\s*")


@dataclass(frozen=True)
class Token:
    value: str
    start: int | None = None  # offsets into the typed line, to keep free text as it was typed
    end: int | None = None


def tokenize(line: str) -> list[Token]:
    """Shell-style words; on unbalanced quotes, plain whitespace-separated words."""
    quoted = line.replace("\u201c", '"').replace("\u201d", '"')  # Slack's smart quotes, same length
    lex = shlex.shlex(quoted, posix=True)
    lex.whitespace_split, lex.commenters = True, ""  # '#12' is a ticket, not a comment
    tokens: list[Token] = []
    try:
        while True:
            before = lex.instream.tell()
            value = lex.get_token()
            if value is None:
                return tokens
            after = lex.instream.tell()
            start = _SPACE.match(quoted, before).end()
            end = after - 1 if after > start and quoted[after - 1].isspace() else after
            tokens.append(Token(value, start, end))
    except ValueError:
        return [Token(m.group(), m.start(), m.end()) for m in re.finditer(r"\S+", line)]


# -- parsing ----------------------------------------------------------------------------------

def _ratio(a: str, b: str) -> float:
    return difflib.SequenceMatcher(None, a, b).ratio()


def nearest(words: Sequence[str], among: Sequence[Command] = COMMANDS) -> tuple[Command, float]:
    """The command whose words look most like the first words typed, and how alike they are."""
    lowered = [w.lower() for w in words]
    scored = [(_ratio(c.name, " ".join(lowered[:len(c.words)])), -i, c) for i, c in enumerate(among)]
    score, _, command = max(scored)
    return command, score


def _match(values: list[str]) -> Command | None:
    lowered = [v.lower() for v in values]
    found = [c for c in COMMANDS if tuple(lowered[:len(c.words)]) == c.words]
    return max(found, key=lambda c: len(c.words)) if found else None


def parse(words: str | Sequence[str]) -> Parsed:
    """Parse what staff typed into a command and typed arguments, or raise InvalidInput."""
    line = words if isinstance(words, str) else None
    tokens = tokenize(words) if isinstance(words, str) else [Token(str(w)) for w in words]
    if not tokens:
        return Parsed(BY_NAME["help"], {"command": None})
    values = [t.value for t in tokens]
    command = _match(values)
    if command is None:
        group = [c for c in COMMANDS if c.words[0] == values[0].lower()]
        guess, _ = nearest(values, group if len(values) == 1 and group else COMMANDS)
        if group and len(values) == 1:
            raise InvalidInput(f"`{values[0]}` needs one of: {', '.join(c.words[1] for c in group)}",
                               hint=guess.hint())
        raise _unknown(values, guess)
    try:
        args = _arguments(command, tokens[len(command.words):], line)
    except InvalidInput:
        longer = [c for c in COMMANDS if c.words[:len(command.words)] == command.words and c is not command]
        if longer and len(values) > len(command.words):
            guess, score = nearest(values, longer)
            if score >= 0.75:
                raise _unknown(values, guess) from None
        raise
    if args is None:
        return Parsed(BY_NAME["help"], {"command": command.name})
    return Parsed(command, args)


def _unknown(values: list[str], guess: Command) -> InvalidInput:
    typed = " ".join(values[:len(guess.words)])
    return InvalidInput(f"unknown command `{typed}`; did you mean `{guess.name}`?", hint=guess.hint())


def _arguments(command: Command, tokens: list[Token], line: str | None) -> dict[str, Any] | None:
    """The typed arguments, or None when the words ask for the command's help (``--help``)."""
    by_name: dict[str, Flag | Option] = {o.name: o for o in command.options} | {f.name: f for f in command.flags}
    args: dict[str, Any] = {p.key: None for p in command.positionals}
    args |= {f.key: False for f in command.flags} | {o.key: o.default for o in command.options}
    given: set[str] = set()
    slots = list(command.positionals)
    taken: list[tuple[Positional, list[int]]] = []
    options_done = False
    i = 0
    while i < len(tokens):
        value = tokens[i].value
        rest_started = bool(taken) and taken[-1][0].rest
        # Free text may mention --words; only a command without options can treat them as text.
        dashes_are_text = not by_name and (rest_started or bool(slots) and slots[0].rest)
        if value == "--" and not options_done:
            options_done = True
        elif value == "--help" and not options_done and not rest_started:
            return None
        elif value.startswith("--") and len(value) > 2 and not options_done and not dashes_are_text:
            i = _option(command, by_name, tokens, i, args, given)
        elif rest_started:
            taken[-1][1].append(i)
        elif slots:
            taken.append((slots.pop(0), [i]))
        else:
            quote = "; put a name with spaces in quotes" if command.positionals else ""
            raise InvalidInput(f"unexpected `{value}`{quote}", hint=command.hint())
        i += 1
    for slot in slots:
        if slot.required:
            raise InvalidInput(f"`{command.name}` needs {slot.metavar}", hint=command.hint())
    for slot, indexes in taken:
        raw = _joined([tokens[j] for j in indexes], line, indexes)
        literal = next((n for n in slot.names[1:] if n.islower() and raw.strip().lower() == n), None)
        args[slot.key] = literal or _convert(slot.names[0], raw, slot.metavar, command)
    return args


def _option(command: Command, by_name: dict[str, Flag | Option], tokens: list[Token], i: int,
            args: dict[str, Any], given: set[str]) -> int:
    """Consume the option at ``tokens[i]`` into ``args``; return the index of its last token."""
    name, eq, inline = tokens[i].value.partition("=")
    spec = by_name.get(name)
    if spec is None:
        close = difflib.get_close_matches(name, list(by_name), n=1)
        extra = f"; did you mean {close[0]}?" if close else ""
        raise InvalidInput(f"`{command.name}` has no option {name}{extra}", hint=command.hint())
    if spec.key in given:
        raise InvalidInput(f"{name} given twice", hint=command.hint())
    given.add(spec.key)
    if isinstance(spec, Flag):
        if eq:
            raise InvalidInput(f"{name} takes no value", hint=command.hint())
        clash = (given & set(spec.group)) - {spec.key}
        if clash:
            others = " or ".join(f"--{k}" for k in sorted(clash))
            raise InvalidInput(f"{name} and {others} exclude each other", hint=command.hint())
        args[spec.key] = True
        return i
    if not eq:
        if i + 1 >= len(tokens):
            raise InvalidInput(f"{name} needs a value ({spec.metavar})", hint=command.hint())
        i += 1
        inline = tokens[i].value
    args[spec.key] = _convert(spec.metavar, inline, name, command)
    return i


def _joined(parts: list[Token], line: str | None, indexes: list[int]) -> str:
    """One word as parsed; several adjacent words exactly as typed (apostrophes, line breaks)."""
    if len(parts) == 1:
        return parts[0].value
    contiguous = indexes == list(range(indexes[0], indexes[-1] + 1))
    if line is not None and contiguous and parts[0].start is not None and parts[-1].end is not None:
        return line[parts[0].start:parts[-1].end]
    return " ".join(p.value for p in parts)
