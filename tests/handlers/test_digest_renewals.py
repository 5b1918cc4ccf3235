"""The staff digest lists the renewal reminders nobody could be emailed (paper invoicing), by service."""
import datetime as dt

from handlers.billing.digest import build
from handlers.renewals import reminders
from tests.support.renewals import make_account


def test_paper_accounts_renewals_appear_in_the_digest_to_send_by_hand(services, clock):
    make_account(services, "inkwell", {"inkwell-press.test": "2026-11-26"}, invoicing="paper")
    at = dt.datetime(2026, 11, 21, 8, tzinfo=dt.timezone.utc)
    clock.set(at)
    reminders.sweep(services, at)
    clock.advance(hours=1)
    digest = services.run(build, readonly=True)
    section = next(items for title, items in ((s["title"], s["items"]) for s in digest["sections"])
                   if title.startswith("Notices to send by hand"))
    assert any("inkwell-press.test" in line and "skipped paper" in line for line in section), section
