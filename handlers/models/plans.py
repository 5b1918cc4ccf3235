"""Charging plans (fixed monthly fees and per-unit prices of metered usage), accounts' subscriptions
to them, and the usage records the month-end charges are computed from."""
from __future__ import annotations

import datetime as dt
from typing import Optional

from sqlalchemy import Date, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from handlers.models.base import Base, Minor, StrEnum, enum_column

# Prices and quantities are exact scaled integers: a unit price in millionths of the currency's
# minor unit (0.0125 EUR a GB is 1_250_000), a quantity in millionths of its unit.
MICROS = 10 ** 6


class PlanLineKind(StrEnum):
    fee = "fee"      # a fixed monthly fee
    usage = "usage"  # a price per unit of a metric


class Plan(Base):
    """A charging plan offered to many accounts, in one currency."""

    __tablename__ = "plan"

    id: Mapped[int] = mapped_column(primary_key=True)
    ref: Mapped[str] = mapped_column(String(100), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    currency: Mapped[str] = mapped_column(String(3))
    created_at: Mapped[dt.datetime]

    lines: Mapped[list["PlanLine"]] = relationship(
        back_populates="plan", order_by="PlanLine.position", cascade="all, delete-orphan")


class PlanLine(Base):
    """One priced line of a plan: a monthly fee (``code`` is its ref) or a metric's unit price."""

    __tablename__ = "plan_line"
    __table_args__ = (UniqueConstraint("plan_id", "code"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    plan_id: Mapped[int] = mapped_column(ForeignKey("plan.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    kind: Mapped[PlanLineKind] = enum_column(PlanLineKind)
    code: Mapped[str] = mapped_column(String(64))  # the fee's ref, or the metric ("bandwidth_gb")
    text: Mapped[str] = mapped_column(Text)
    unit: Mapped[str] = mapped_column(String(32), default="")  # "GB", "mailbox"; empty for fees
    # the monthly fee (fee) or the price of one unit (usage), in millionths of the minor unit
    price_micros: Mapped[int] = mapped_column(Minor)

    plan: Mapped[Plan] = relationship(back_populates="lines")


class Subscription(Base):
    """An account on a plan from ``starts_on`` through ``ends_on`` (open when None), business days."""

    __tablename__ = "plan_subscription"
    __table_args__ = (UniqueConstraint("account_id", "starts_on"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("account.id", ondelete="CASCADE"))
    plan_id: Mapped[int] = mapped_column(ForeignKey("plan.id"))
    starts_on: Mapped[dt.date] = mapped_column(Date)
    ends_on: Mapped[Optional[dt.date]] = mapped_column(Date)  # the last day on the plan
    # months that ended before this moment are not charged: the previous system charged them
    created_at: Mapped[dt.datetime]
    actor: Mapped[str] = mapped_column(String(100))

    plan: Mapped[Plan] = relationship()


class UsageRecord(Base):
    """A metered quantity used by an account at a moment; ``ref`` (the meter's id) makes it count once."""

    __tablename__ = "usage_record"
    __table_args__ = (UniqueConstraint("account_id", "ref"),
                      Index("ix_usage_record_account_metric_at", "account_id", "metric", "at"))

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("account.id", ondelete="CASCADE"))
    metric: Mapped[str] = mapped_column(String(64))
    quantity_micros: Mapped[int] = mapped_column(Minor)  # millionths of the metric's unit
    at: Mapped[dt.datetime]
    ref: Mapped[str] = mapped_column(String(200))
    recorded_at: Mapped[dt.datetime]
    actor: Mapped[str] = mapped_column(String(100))
