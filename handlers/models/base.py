"""Declarative base, naming convention for constraints, and column types shared by every model."""
from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, MetaData, String, TypeDecorator
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Named constraints so Alembic migrations are stable across SQLite and PostgreSQL.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator):
    """A timezone-aware UTC time; refuses naive datetimes instead of guessing their zone.

    PostgreSQL stores ``timestamptz``; SQLite has no time type, so the UTC value is stored
    naive and given its zone back on load.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTCDateTime column; use services.clock.now()")
        value = value.astimezone(dt.timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.timezone.utc)
        return value.astimezone(dt.timezone.utc)


# JSON on SQLite, JSONB on PostgreSQL.
JSONType = JSON().with_variant(JSONB(), "postgresql")

Minor = BigInteger  # money: integer minor units (cents), always beside a currency column


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {
        dt.datetime: UTCDateTime(),
        dict[str, Any]: JSONType,
        list[Any]: JSONType,
    }


def enum_column(enum_cls: type[enum.Enum], **kw: Any) -> Mapped[Any]:
    """An enum stored as its value in a short VARCHAR (no native enum types to migrate)."""
    from sqlalchemy import Enum

    return mapped_column(
        Enum(enum_cls, native_enum=False, create_constraint=False, length=24,
             values_callable=lambda e: [m.value for m in e], validate_strings=True),
        **kw,
    )


def currency_column() -> Mapped[str]:
    return mapped_column(String(3))


class StrEnum(str, enum.Enum):
    def __str__(self) -> str:
        return self.value
