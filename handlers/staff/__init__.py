"""Staff commands for Slack's `/desk` and `renewdesk staff`: parse, check the role, run, answer.

Front ends call :func:`execute` and print ``reply.text`` or :func:`envelope` as JSON; Slack
asks for confirmation first when ``parse(words).command.destructive``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from handlers.errors import InvalidInput, NotAllowed, RenewdeskError
from handlers.models import StaffMember
# importing a module registers its commands
from handlers.staff import accounts as _accounts, team as _team, tickets as _tickets  # noqa: F401
from handlers.staff import billing as _billing, renewals as _renewals, services as _services  # noqa: F401
from handlers.staff import payments as _payments  # noqa: F401
from handlers.staff.commands import Reply, handler_for, is_available, register
from handlers.staff.grammar import BY_NAME, COMMANDS, Command, Parsed, parse
from handlers.staff.values import slack_user_id

if TYPE_CHECKING:
    from handlers.services import Services, Tx

__all__ = ["BY_NAME", "COMMANDS", "Command", "Parsed", "Reply", "actor_for", "authorize", "envelope", "execute",
           "preview", "is_available", "parse", "register"]


def actor_for(as_user: str | None) -> str:
    """The audit log's actor: ``staff:U123`` for a Slack user, ``cli`` for the shell operator."""
    return "cli" if as_user is None else f"staff:{as_user}"


def execute(services: "Services", words: str | Sequence[str], *, as_user: str | None) -> Reply:
    """Run one staff command as ``as_user`` (a Slack user id), or as the shell's admin when None."""
    if as_user is not None:
        try:
            as_user = slack_user_id(as_user)
        except ValueError:
            raise InvalidInput(f"not a Slack user id: {as_user!r}") from None
    actor = actor_for(as_user)
    try:
        parsed = parse(words)
    except InvalidInput:
        # someone not on the team learns that first, not how to spell a command
        if as_user is not None:
            services.run(_member, as_user, actor=actor, readonly=True)
        raise
    return services.run(_dispatch, parsed, as_user, actor=actor, readonly=not parsed.command.writes)


def authorize(services: "Services", words: str | Sequence[str], *, as_user: str) -> Parsed:
    """Parse and check the role without running anything (Slack asks before destructive commands)."""
    try:
        as_user = slack_user_id(as_user)
    except ValueError:
        raise InvalidInput(f"not a Slack user id: {as_user!r}") from None
    try:
        parsed = parse(words)
    except InvalidInput:
        services.run(_member, as_user, actor=actor_for(as_user), readonly=True)
        raise
    services.run(_allowed, parsed.command, as_user, actor=actor_for(as_user), readonly=True)
    return parsed


class _Preview(Exception):
    """Carries a command's answer out of a transaction that must not commit."""

    def __init__(self, reply: Reply):
        super().__init__("preview")
        self.reply = reply


def preview(services: "Services", words: str | Sequence[str], *, as_user: str | None) -> Reply:
    """What a command would answer, run in a transaction that is rolled back: nothing changes,
    no mail or Slack post is queued (Slack shows it before asking to confirm a destructive command)."""
    parsed = authorize(services, words, as_user=as_user) if as_user is not None else parse(words)
    as_user = slack_user_id(as_user) if as_user is not None else None

    def dry(tx: "Tx") -> None:
        raise _Preview(_dispatch(tx, parsed, as_user))
    try:
        services.run(dry, actor=actor_for(as_user))
    except _Preview as done:
        return done.reply
    raise AssertionError("unreachable")  # pragma: no cover


def _member(tx: "Tx", as_user: str) -> StaffMember:
    found = _team.member(tx, as_user)
    if found is None:
        raise NotAllowed("you are not on the renewdesk team; an admin can add you with "
                         f"`team add {as_user} ROLE`")
    return found


def _dispatch(tx: "Tx", parsed: Parsed, as_user: str | None) -> Reply:
    if as_user is not None:
        _allowed(tx, parsed.command, as_user)
    return handler_for(parsed.command.name)(tx, parsed.args)


def _allowed(tx: "Tx", command: Command, as_user: str) -> None:
    role = _member(tx, as_user).role.value
    if not command.allows(role):
        needed = " or ".join(command.roles)
        raise NotAllowed(f"`{command.name}` needs the {needed} role; you are {role}",
                         hint="an admin can change your role with `team add`")


def envelope(outcome: Reply | BaseException) -> dict[str, Any]:
    """The ``--json`` answer: ``{"ok": true, "result": ...}`` or ``{"ok": false, "error": {...}}``."""
    if isinstance(outcome, Reply):
        return {"ok": True, "result": outcome.data}
    if isinstance(outcome, RenewdeskError):
        return {"ok": False, "error": outcome.to_json()}
    return {"ok": False, "error": {"kind": "error", "message": str(outcome) or type(outcome).__name__}}
