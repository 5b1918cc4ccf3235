"""One error hierarchy for every operation; front ends translate it into their medium.

The ``kind`` of each class is the public name used in ``renewdesk staff --json`` answers, in
Slack replies and in logs. Edges translate: an ephemeral Slack line, an explanatory email,
an SMTP reply code, an exit code.
"""
from __future__ import annotations


class RenewdeskError(Exception):
    """Base of every error an operation raises on purpose."""

    kind = "error"
    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def to_json(self) -> dict:
        data = {"kind": self.kind, "message": self.message}
        if self.hint:
            data["hint"] = self.hint
        return data


class NotFound(RenewdeskError):
    """The thing named does not exist (or the caller may not know it exists)."""

    kind = "not_found"
    exit_code = 3


class NotAllowed(RenewdeskError):
    """The caller may not do this; the message says what they may do and whom to ask."""

    kind = "not_allowed"
    exit_code = 4


class InvalidInput(RenewdeskError):
    """The input is malformed; the message names the first wrong field or the usage."""

    kind = "invalid_input"
    exit_code = 2

    def __init__(self, message: str, *, path: str | None = None, hint: str | None = None):
        super().__init__(f"{path}: {message}" if path else message, hint=hint)
        self.path = path


class Conflict(RenewdeskError):
    """The operation clashes with the current state (already paid, already exists...)."""

    kind = "conflict"
    exit_code = 5


class Unavailable(RenewdeskError):
    """The command is part of the grammar but its operation is not built yet."""

    kind = "unavailable"
    exit_code = 6


class TemporaryFailure(RenewdeskError):
    """Try again later: the database is unreachable or busy, a relay is down."""

    kind = "temporary"
    exit_code = 75  # EX_TEMPFAIL, what an MTA expects from a pipe


class SettingsError(RenewdeskError):
    """A setting cannot work; the message names the setting."""

    kind = "settings"
    exit_code = 78  # EX_CONFIG
