"""The jobs table: what the clock runs, and when (APScheduler 3, in the worker or `run` process)."""
from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any, Callable

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from handlers import jobs
from handlers.status import HEARTBEAT_JOB, HEARTBEAT_SECONDS

log = logging.getLogger("renewdesk.scheduler")


@dataclass(frozen=True)
class Job:
    name: str
    trigger: Callable[[Any], Any]     # settings -> APScheduler trigger
    run: Callable[[Any], Any]         # services -> result
    description: str


def _heartbeat(services: Any) -> None:
    """Nothing but the record: /healthz in another process tells the scheduler is alive from it."""


def _sweeps(services: Any) -> None:
    report = jobs.run_sweeps_report(services, services.clock.now())
    for line in report.lines:
        log.info("sweep %s", line)
    if report.failed:  # recorded as the job's error: `status` and /healthz show it
        raise jobs.SweepsIncomplete(report)


JOBS: tuple[Job, ...] = (
    Job(HEARTBEAT_JOB, lambda s: IntervalTrigger(seconds=HEARTBEAT_SECONDS), _heartbeat,
        "records that the scheduler is alive"),
    Job("sweeps", lambda s: CronTrigger(hour=s.digest_hour, minute=0, timezone=s.tz), _sweeps,
        "reminders, dunning, suspensions, removals, credit warnings, digest"),
)


def add_jobs(scheduler: BaseScheduler, services: Any) -> None:
    """Every job of :data:`JOBS`; the daily sweeps at once when today's run is due and has not happened.

    A cron trigger only looks forward from the moment it is added, and a missed run is caught up
    only within the same scheduler's life: a worker started at 09:00 would wait until tomorrow.
    """
    for job in JOBS:
        extra: dict[str, Any] = {}
        if job.name == "sweeps" and services.run(jobs.missed_daily_run, readonly=True):
            extra["next_run_time"] = dt.datetime.now(services.settings.tz)
            log.info("today's sweeps have not run yet: running them now")
        scheduler.add_job(jobs.run_job, job.trigger(services.settings), id=job.name, name=job.description,
                          args=(services, job.name, lambda job=job: job.run(services)), **extra)


def start_scheduler(services: Any) -> BackgroundScheduler:
    """Start every job of :data:`JOBS`; a run missed while down is run once when we are back (:func:`add_jobs`)."""
    scheduler = BackgroundScheduler(timezone=services.settings.tz, job_defaults={
        "coalesce": True, "max_instances": 1, "misfire_grace_time": 6 * 3600})
    add_jobs(scheduler, services)
    scheduler.start()
    jobs.run_job(services, HEARTBEAT_JOB, lambda: None)  # so /healthz sees us at once
    log.info("scheduler started: %s", ", ".join(
        f"{j.id} next at {j.next_run_time:%Y-%m-%d %H:%M %Z}" for j in scheduler.get_jobs()))
    return scheduler
