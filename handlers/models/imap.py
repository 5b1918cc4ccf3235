"""How far the IMAP door has read each mailbox it polls."""
from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, String
from sqlalchemy.orm import Mapped, mapped_column

from handlers.models.base import Base


class ImapCursor(Base):
    """One polled mailbox: the UIDVALIDITY seen and the highest UID stored (or skipped) in it.

    Advanced in the same transaction that stores the messages, so it never passes a message
    that is not in the inbox; a new UIDVALIDITY (RFC 3501 section 2.3.1.1) starts it over.
    """

    __tablename__ = "imap_cursor"

    mailbox: Mapped[str] = mapped_column(String(500), primary_key=True)  # user@host:port/FOLDER
    uidvalidity: Mapped[int] = mapped_column(BigInteger)
    last_uid: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[dt.datetime]
