"""The services every front end hands to operations: settings, database, clock, secret key.

Front ends call ``services.run(operation, ...)``; the operation gets a :class:`Tx` (session,
clock reading, actor) and never commits; ``run`` commits once when it returns.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, TypeVar

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from handlers import audit
from handlers.clock import Clock, SystemClock
from handlers.db import Database
from handlers.models import AppSetting
from handlers.settings import Settings

T = TypeVar("T")


@dataclass
class Tx:
    """What an operation sees: one open transaction, the time it started, and who asked."""

    session: Session
    services: "Services"
    actor: str
    now: Any
    _after_commit: list[Callable[[], None]] = field(default_factory=list)

    @property
    def settings(self) -> Settings:
        return self.services.settings

    def audit(self, action: str, *, subject: Any = None, account_id: int | None = None, **detail: Any) -> None:
        audit.record(self.session, self.now, self.actor, action, subject=subject, account_id=account_id, **detail)

    def after_commit(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` once the transaction has committed (e.g. wake the delivery loop)."""
        self._after_commit.append(fn)


class Services:
    """Built once per process (or per test) and passed to every front end."""

    def __init__(self, settings: Settings, *, clock: Clock | None = None, db: Database | None = None):
        self.settings = settings
        self.clock: Clock = clock or SystemClock()
        self.db = db or Database(settings)
        self.outbox_wakeup = threading.Event()   # set when mail is queued: deliver now
        self.inbox_wakeup = threading.Event()    # set when mail is stored: process now
        self.slack_wakeup = threading.Event()    # set when a Slack post is queued: post now
        self._secret: bytes | None = None

    def run(self, operation: Callable[..., T], *args: Any, actor: str = "system", readonly: bool = False,
            **kwargs: Any) -> T:
        """Run one operation in one transaction and return its result."""
        if self._secret is None and not readonly:
            # loaded (or created) in its own short transaction first: on SQLite a second
            # writer opened from inside this one would wait on our own lock
            self.secret_key  # noqa: B018
        with self.db.transaction(readonly=readonly) as session:
            tx = Tx(session=session, services=self, actor=actor, now=self.clock.now())
            result = operation(tx, *args, **kwargs)
        for fn in tx._after_commit:
            fn()
        return result

    # -- the secret key: settings first, else generated into the database once ------------------

    @property
    def secret_key(self) -> bytes:
        if self._secret is None:
            self._secret = (self.settings.secret_key or self._stored_secret()).encode()
        return self._secret

    def _stored_secret(self) -> str:
        with self.db.transaction() as s:
            row = s.get(AppSetting, "secret_key")
            if row is not None:
                return row.value
        try:
            with self.db.transaction() as s:
                s.add(AppSetting(key="secret_key", value=secrets.token_urlsafe(32)))
        except IntegrityError:
            pass  # another process generated it first: use theirs
        with self.db.transaction() as s:
            return s.get(AppSetting, "secret_key").value

    def sign(self, purpose: str, value: str, length: int = 16) -> str:
        """A short HMAC of ``value`` for ``purpose`` (ticket tags, reply addresses)."""
        mac = hmac.new(self.secret_key, f"{purpose}:{value}".encode(), hashlib.sha256).hexdigest()
        return mac[:length]

    def close(self) -> None:
        self.db.dispose()
