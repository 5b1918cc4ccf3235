"""Who gets renewal mail for an account, and who may decide by email."""
from __future__ import annotations

from dataclasses import dataclass
from handlers.models import Account, Contact
from handlers.outbox import Recipient


def renewal_recipients(account: Account, *, with_sales: bool = True) -> list[Recipient]:
    """Contacts with the renewals permission who want renewal mail, then the sales contact (reseller).

    One entry per address. An account whose contacts all opted out still reaches its owner, so
    nobody loses a domain for an unticked box (the owner's preference wins only when a sales
    contact receives the reminder instead).
    """
    found: dict[str, Recipient] = {}
    for c in account.contacts:
        if c.may("renewals") and c.wants("renewals"):
            found.setdefault(c.email.lower(), Recipient(c.email, c.name))
    sales = (account.sales_contact or "").strip().lower()
    if with_sales and sales:
        found.setdefault(sales, Recipient(sales, f"{account.name} sales contact"))
    if not found and account.owner is not None:
        found[account.owner.email.lower()] = Recipient(account.owner.email, account.owner.name)
    return list(found.values())


@dataclass(frozen=True)
class Sender:
    """What a reply's From address is to the account a token names."""

    contact: Contact | None
    is_sales: bool

    @property
    def actor(self) -> str:
        if self.contact is not None:
            return f"contact:{self.contact.id}"
        return "sales_contact" if self.is_sales else "unknown"

    @property
    def may_renew(self) -> bool:
        return self.is_sales or (self.contact is not None and self.contact.may("renewals"))

    @property
    def may_decline(self) -> bool:
        # a decline loses the client a name: only the client's own people, never a reseller's reply
        return self.contact is not None and self.contact.may("renewals")


def sender_of(account: Account, address: str) -> Sender:
    address = (address or "").strip().lower()
    contact = next((c for c in account.contacts if c.email.lower() == address), None) if address else None
    sales = bool(address) and address == (account.sales_contact or "").strip().lower()
    return Sender(contact, sales)


def whom_to_ask(account: Account) -> str:
    owner = account.owner
    return f"{owner.name or 'the account owner'} <{owner.email}>" if owner else "the account owner"


def sections(contact: Contact) -> list[str]:
    from handlers.models import PERMISSIONS
    return [p for p in PERMISSIONS if contact.may(p)]
