"""Staff, the audit log, scheduler bookkeeping and small key-value settings kept in the database."""
from __future__ import annotations

import datetime as dt
from typing import Any, Optional

from sqlalchemy import Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from handlers.models.base import Base, StrEnum, enum_column


class Role(StrEnum):
    admin = "admin"
    billing = "billing"
    support = "support"
    readonly = "readonly"


class StaffMember(Base):
    __tablename__ = "staff_member"

    id: Mapped[int] = mapped_column(primary_key=True)
    slack_user_id: Mapped[str] = mapped_column(String(32), unique=True)
    role: Mapped[Role] = enum_column(Role)
    name: Mapped[str] = mapped_column(String(200), default="")
    email: Mapped[Optional[str]] = mapped_column(String(320))
    added_at: Mapped[dt.datetime]
    added_by: Mapped[str] = mapped_column(String(100))


class AuditEvent(Base):
    """Who did what to what, from which door: every change an operation makes is recorded."""

    __tablename__ = "audit_event"
    __table_args__ = (Index("ix_audit_subject", "subject_type", "subject_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(index=True)
    actor: Mapped[str] = mapped_column(String(100))   # staff:U123, contact:42, system:scheduler, cli
    action: Mapped[str] = mapped_column(String(64))
    subject_type: Mapped[Optional[str]] = mapped_column(String(32))
    subject_id: Mapped[Optional[str]] = mapped_column(String(64))
    account_id: Mapped[Optional[int]] = mapped_column(index=True)
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)


class JobRun(Base):
    """Per scheduled job: when it last ran, how far it got, how it ended."""

    __tablename__ = "job_run"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    last_started_at: Mapped[Optional[dt.datetime]]
    last_finished_at: Mapped[Optional[dt.datetime]]
    last_outcome: Mapped[Optional[str]] = mapped_column(String(16))  # ok | error
    last_error: Mapped[Optional[str]] = mapped_column(Text)
    watermark: Mapped[Optional[dt.datetime]]  # the moment the last complete run covered
    runs: Mapped[int] = mapped_column(default=0)


class AppSetting(Base):
    """Values renewdesk generates for itself (the secret key) rather than reads from settings."""

    __tablename__ = "app_setting"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
