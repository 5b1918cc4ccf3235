"""The jobs table: what runs when, and that every run is recorded for `status` and /healthz."""
import datetime as dt

import pytest

from handlers import jobs
from handlers.models import JobRun
from handlers.status import report
from renewdesk.scheduler import JOBS


@pytest.fixture
def one_sweep(monkeypatch):
    monkeypatch.setattr(jobs, "SWEEPS", [])          # only this sweep: the product's own are tested elsewhere
    monkeypatch.setattr(jobs, "SWEEP_MODULES", ())
    seen = []
    jobs.register_sweep(jobs.Sweep("test_sweep", lambda svc, at, dry: seen.append((at, dry)) or [f"saw {at:%Y-%m-%d}"],
                        "records its calls"))
    yield seen


def test_run_job_records_success_and_failure(services, clock):
    """A failing job is logged and recorded with its error; it does not raise into the scheduler."""
    assert jobs.run_job(services, "demo_job", lambda: "fine") == "fine"
    clock.advance(minutes=1)
    assert jobs.run_job(services, "demo_job", lambda: 1 / 0) is None
    with services.db.transaction(readonly=True) as s:
        row = s.get(JobRun, "demo_job")
    assert (row.runs, row.last_outcome) == (2, "error")
    assert row.last_error.startswith("ZeroDivisionError") and row.last_finished_at == clock.now()


def test_sweeps_run_in_order_with_the_given_moment(services, one_sweep):
    at = dt.datetime(2027, 1, 1, 8, tzinfo=dt.timezone.utc)
    lines = jobs.run_sweeps(services, at, dry_run=True)
    assert [line for line in lines if line.startswith("test_sweep")] == ["test_sweep: saw 2027-01-01"]
    assert lines[-1] == "test_sweep: saw 2027-01-01"  # registered last, so it runs last
    assert one_sweep == [(at, True)]


def test_a_sweep_registered_twice_is_refused(one_sweep):
    with pytest.raises(ValueError):
        jobs.register_sweep(jobs.Sweep("test_sweep", lambda *a: [], ""))


def test_daily_sweep_fires_at_the_digest_hour_in_the_business_timezone(settings):
    """08:00 in Amsterdam is 07:00 UTC in winter: the cron trigger follows the business's clock."""
    ams = settings.replace(timezone="Europe/Amsterdam", digest_hour=8)
    trigger = next(j for j in JOBS if j.name == "sweeps").trigger(ams)
    after = dt.datetime(2026, 11, 21, 9, tzinfo=dt.timezone.utc)
    fire = trigger.get_next_fire_time(None, after)
    assert fire.astimezone(dt.timezone.utc) == dt.datetime(2026, 11, 22, 7, tzinfo=dt.timezone.utc)


def test_heartbeat_makes_the_scheduler_alive_in_status(services, clock):
    """/healthz in the web process judges the scheduler by its last heartbeat."""
    assert services.run(report, readonly=True)["scheduler"]["alive"] is False
    jobs.run_job(services, "heartbeat", lambda: None)
    assert services.run(report, readonly=True)["scheduler"]["alive"] is True
    clock.advance(minutes=10)
    assert services.run(report, readonly=True)["scheduler"]["alive"] is False
