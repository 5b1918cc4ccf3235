"""The demo data set: five accounts that show every feature, in the import format.

Dates are relative to the day it is loaded, so the reminders, dunning and credit-limit
sweeps have something to do on that very day:

- Northwind Traders (EUR): owner and two sub-account contacts with different permissions
  and email preferences; domains expiring today (deletion day), tomorrow, in 15 days and in
  1 and 3 calendar months, one expired 3 days ago (still renewable) and one far away;
  hosting and SSL; invoices paid, due and partially paid; an open and an answered ticket.
- Brambling Bakery (EUR): a chronic late payer (``auto_suspend``) with an invoice 6 days
  past its pay-by date; domains expiring in 3, 4 and 5 days; a closed ticket.
- Harbour Law Partners (GBP): paper invoicing, an overdue invoice (not flagged), domains in
  2 days and 2 months, a cancelled domain; a closed and archived ticket.
- Pixelworks Agency (USD): a reseller with a sales contact; domains for its clients, a VPS,
  a certificate and an extra; an answered ticket with an internal note.
- Fernhill Studio (EUR): credit limit 100.00 and usage charges putting the balance at -92.00.
"""
from __future__ import annotations

import calendar
import datetime as dt
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from handlers.importer import ImportResult, Progress, import_document
from handlers.models import Account

# The default renewal reminder offsets: days, then calendar months, before expiry.
REMINDER_DAYS = (0, 1, 2, 3, 4, 5, 15)
REMINDER_MONTHS = (1, 2, 3)


def add_months(day: dt.date, months: int) -> dt.date:
    """The same day ``months`` calendar months later, clamped to the month's last day."""
    index = day.month - 1 + months
    year, month = day.year + index // 12, index % 12 + 1
    return day.replace(year=year, month=month, day=min(day.day, calendar.monthrange(year, month)[1]))


def demo_document(today: dt.date) -> dict[str, Any]:
    """The whole demo data set for ``today``, as an import document."""
    d = _Dates(today)
    return {"accounts": [_northwind(d), _bramble(d), _harbour(d), _pixelworks(d), _fernhill(d)]}


def load_demo(tx: Any, progress: Progress | None = None) -> ImportResult:
    """Import the demo data set dated from today in the business's timezone."""
    today = tx.now.astimezone(tx.settings.tz).date()
    return import_document(tx, demo_document(today), progress)


def demo_is_loaded(session: Session) -> bool:
    """True when the database has any account at all."""
    return session.scalar(select(Account.id).limit(1)) is not None


class _Dates:
    """Dates and times relative to the demo's today, as the import format writes them."""

    def __init__(self, today: dt.date):
        self.today = today

    def days(self, n: int) -> str:
        """``n`` days from today (negative: ago)."""
        return (self.today + dt.timedelta(days=n)).isoformat()

    def months(self, n: int) -> str:
        """``n`` calendar months from today."""
        return add_months(self.today, n).isoformat()

    def at(self, days_ago: int, hhmm: str) -> str:
        """A UTC time ``days_ago`` days before today."""
        return f"{self.days(-days_ago)}T{hhmm}:00+00:00"


def _domain(name: str, expires_on: str, price: str, status: str = "active", **extra: Any) -> dict[str, Any]:
    return {"ref": name, "kind": "domain", "name": name, "status": status, "expires_on": expires_on,
            "period_years": 1, "price": price, **extra}


def _service(ref: str, kind: str, name: str, expires_on: str, price: str, **extra: Any) -> dict[str, Any]:
    return {"ref": ref, "kind": kind, "name": name, "status": "active", "expires_on": expires_on,
            "period_years": 1, "price": price, **extra}


def _invoice(number: str, issued: str, due: str, lines: list[tuple[str, str, str]], paid: str) -> dict[str, Any]:
    return {"number": number, "issued_on": issued, "due_on": due, "paid": paid,
            "lines": [{"text": text, "amount": amount, "tax": tax} for text, amount, tax in lines]}


def _msg(sender: str, kind: str, body: str, at: str) -> dict[str, str]:
    return {"from": sender, "kind": kind, "body": body, "at": at}


def _northwind(d: _Dates) -> dict[str, Any]:
    """A busy client: sub-accounts, domains on many reminder days, every invoice state."""
    return {
        "ref": "northwind", "name": "Northwind Traders Ltd", "currency": "EUR",
        "owner": {"email": "anna@northwind.test", "name": "Anna Lindqvist"},
        "contacts": [
            {"email": "accounts@northwind.test", "name": "Bo Berg", "permissions": ["billing"],
             "email_preferences": {"renewals": False, "billing": True, "tickets": False}},
            {"email": "dev@northwind.test", "name": "Dana Devi", "permissions": ["tickets", "services", "renewals"],
             "email_preferences": {"renewals": True, "billing": False, "tickets": True}},
        ],
        "credit_limit": "500.00", "auto_suspend": False, "invoicing": "electronic",
        "services": [
            _domain("northwind-sale.test", d.days(0), "12.00"),
            _domain("northwind-shop.test", d.days(1), "12.00"),
            _domain("northwind-mail.test", d.days(15), "12.00"),
            _domain("northwind.test", d.months(1), "12.00"),
            _domain("northwind-eu.test", d.months(3), "9.50"),
            _domain("northwind-promo.test", d.days(-3), "12.00", status="expired"),
            _domain("northwind-archive.test", d.days(400), "12.00", auto_renew=True),
            _service("nw-hosting", "hosting", "Hosting Business", d.days(40), "19.00"),
            _service("nw-ssl", "ssl", "SSL certificate www.northwind.test", d.days(200), "49.00"),
        ],
        "invoices": [
            _invoice("NW-1001", d.days(-40), d.days(-26), [("Hosting Business, one month", "19.00", "3.80"),
                                                          ("Domain northwind-old.test, 1 year", "12.00", "2.40")],
                     paid="37.20"),
            _invoice("NW-1002", d.days(-9), d.days(5), [("Hosting Business, one month", "19.00", "3.80"),
                                                       ("Design work, 2 hours", "90.00", "18.00")],
                     paid="50.00"),
            _invoice("NW-1003", d.days(-2), d.days(12), [("SSL certificate, 1 year", "49.00", "9.80")], paid="0.00"),
        ],
        "tickets": [
            {"ref": "demo-nw-1", "subject": "Mail for dev@ bounces since yesterday", "status": "open",
             "opened_by": "dev@northwind.test", "messages": [
                 _msg("dev@northwind.test", "client",
                      "Hi, since yesterday afternoon mail to dev@northwind.test bounces with 550. Can you check?",
                      d.at(1, "16:40"))]},
            {"ref": "demo-nw-2", "subject": "Move northwind-shop.test to the new hosting plan", "status": "answered",
             "opened_by": "anna@northwind.test", "messages": [
                 _msg("anna@northwind.test", "client", "Please move the shop to Hosting Business.", d.at(3, "10:05")),
                 _msg("staff:U0DEMOSUP", "reply", "Happy to. Shall we do it tonight after 22:00?", d.at(2, "09:30")),
             ]},
        ],
    }


def _bramble(d: _Dates) -> dict[str, Any]:
    """A chronic late payer: flagged, with an invoice more than 3 days past its pay-by date."""
    return {
        "ref": "bramble", "name": "Brambling Bakery", "currency": "EUR",
        "owner": {"email": "olga@bramble.test", "name": "Olga Brambling"},
        "contacts": [{"email": "shop@bramble.test", "name": "Shop counter", "permissions": ["tickets"],
                      "email_preferences": {"renewals": False, "billing": False, "tickets": True}}],
        "credit_limit": "300.00", "auto_suspend": True, "invoicing": "electronic", "overdue_notices": True,
        "services": [
            _domain("bramble.test", d.days(3), "12.00"),
            _domain("bramble-cakes.test", d.days(4), "12.00"),
            _domain("bramble-order.test", d.days(5), "12.00"),
            _service("bb-hosting", "hosting", "Hosting Basic", d.days(70), "10.00"),
        ],
        "invoices": [
            _invoice("BB-2001", d.days(-55), d.days(-41), [("Hosting Basic, one month", "10.00", "2.00")],
                     paid="12.00"),
            _invoice("BB-2002", d.days(-20), d.days(-6), [("Hosting Basic, one month", "10.00", "2.00"),
                                                         ("Domain bramble.test, 1 year", "12.00", "2.40")],
                     paid="0.00"),
        ],
        "tickets": [
            {"ref": "demo-bb-1", "subject": "Can I pay the invoice in two parts?", "status": "closed",
             "opened_by": "olga@bramble.test", "messages": [
                 _msg("olga@bramble.test", "client", "Could I pay BB-2002 in two parts?", d.at(8, "14:00")),
                 _msg("staff:U0DEMOBIL", "reply", "Yes, two payments are fine; the first by the pay-by date please.",
                      d.at(7, "08:45")),
                 _msg("olga@bramble.test", "client", "Thank you!", d.at(7, "09:02")),
             ]},
        ],
    }


def _harbour(d: _Dates) -> dict[str, Any]:
    """Paper invoicing: staff handle its invoices by hand; one is overdue."""
    return {
        "ref": "harbour", "name": "Harbour Law Partners", "currency": "GBP",
        "owner": {"email": "m.reed@harbourlaw.test", "name": "Martha Reed"},
        "contacts": [{"email": "office@harbourlaw.test", "name": "Front office", "permissions": ["renewals"],
                      "email_preferences": {"renewals": True, "billing": False, "tickets": False}}],
        "credit_limit": "1000.00", "auto_suspend": False, "invoicing": "paper", "overdue_notices": False,
        "services": [
            _domain("harbourlaw.test", d.months(2), "10.00"),
            _domain("harbour-legal.test", d.days(2), "10.00"),
            _domain("harbourlaw-old.test", d.days(-40), "10.00", status="cancelled"),
            _domain("harbour-partners.test", d.days(500), "10.00", auto_renew=True),
            _service("hl-ssl", "ssl", "SSL certificate harbourlaw.test", d.days(150), "39.00"),
        ],
        "invoices": [
            _invoice("HL-3001", d.days(-30), d.days(-2), [("Domains, 3 x 1 year", "30.00", "6.00")], paid="0.00"),
        ],
        "tickets": [
            {"ref": "demo-hl-1", "subject": "Paper invoice address changed", "status": "closed", "archived": True,
             "opened_by": "office@harbourlaw.test", "messages": [
                 _msg("office@harbourlaw.test", "client", "Please send paper invoices to 4 Quay Street from now on.",
                      d.at(60, "11:20")),
                 _msg("staff:U0DEMOBIL", "note", "Updated the postal address in the paper run.", d.at(59, "09:00")),
                 _msg("staff:U0DEMOBIL", "reply", "Done: the next invoice goes to 4 Quay Street.", d.at(59, "09:05")),
             ]},
        ],
    }


def _pixelworks(d: _Dates) -> dict[str, Any]:
    """A reseller: its clients' domains, renewals completed through its sales contact."""
    return {
        "ref": "pixelworks", "name": "Pixelworks Agency", "currency": "USD",
        "owner": {"email": "pat@pixelworks.test", "name": "Pat Okafor"},
        "contacts": [{"email": "ops@pixelworks.test", "name": "Ops desk",
                      "permissions": ["services", "tickets", "contacts", "renewals"]}],
        "credit_limit": "2000.00", "auto_suspend": False, "invoicing": "electronic",
        "sales_contact": "sales@pixelworks.test",
        "services": [
            _domain("sunnyside-dental.test", d.days(1), "14.00"),
            _domain("riverbend-books.test", d.days(5), "14.00"),
            _domain("kiteclub.test", d.days(15), "14.00"),
            _domain("greenleaf-cafe.test", d.months(1), "14.00"),
            _domain("pixelworks.test", d.days(700), "14.00", auto_renew=True),
            _service("px-vps-1", "vps", "VPS 4 GB (client sites)", d.days(20), "24.00"),
            _service("px-ssl", "ssl", "Wildcard SSL *.pixelworks.test", d.months(3), "120.00"),
            _service("px-backup", "extra", "Off-site backup 100 GB", d.days(90), "5.00"),
        ],
        "invoices": [
            _invoice("PX-4001", d.days(-35), d.days(-21), [("VPS 4 GB, one month", "24.00", "0.00"),
                                                          ("Off-site backup 100 GB", "5.00", "0.00")],
                     paid="29.00"),
            _invoice("PX-4002", d.days(-5), d.days(9), [("VPS 4 GB, one month", "24.00", "0.00"),
                                                       ("Off-site backup 100 GB", "5.00", "0.00")],
                     paid="0.00"),
        ],
        "tickets": [
            {"ref": "demo-px-1", "subject": "Transfer kiteclub.test to us", "status": "answered",
             "opened_by": "ops@pixelworks.test", "messages": [
                 _msg("ops@pixelworks.test", "client", "We need the transfer code for kiteclub.test.",
                      d.at(1, "13:10")),
                 _msg("staff:U0DEMOSUP", "note", "Registry lock is on; lift it before sending the code.",
                      d.at(1, "13:40")),
                 _msg("staff:U0DEMOSUP", "reply", "The code is on its way; can you confirm the admin email?",
                      d.at(1, "14:05")),
             ]},
        ],
    }


def _fernhill(d: _Dates) -> dict[str, Any]:
    """Near its credit limit: 92.00 of 100.00 used, at a pace that reaches it within days."""
    weekly = [{"ref": f"usage-w{i}", "on": d.days(-25 + 7 * i), "amount": "23.00",
               "text": f"VPS usage, week {i + 1}"} for i in range(4)]
    return {
        "ref": "fernhill", "name": "Fernhill Studio", "currency": "EUR",
        "owner": {"email": "jo@fernhill.test", "name": "Jo Fernhill"},
        "credit_limit": "100.00", "auto_suspend": False, "invoicing": "electronic",
        "services": [
            _service("fh-vps", "vps", "VPS 2 GB, billed by usage", d.months(6), "0.00"),
            _domain("fernhill.test", d.days(220), "12.00"),
        ],
        "charges": weekly,
    }
