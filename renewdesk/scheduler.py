"""The jobs table: what the clock runs, and when (APScheduler 3, in the worker or `run` process)."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable

from apscheduler.schedulers.background import BackgroundScheduler
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
    for line in jobs.run_sweeps(services, services.clock.now()):
        log.info("sweep %s", line)


JOBS: tuple[Job, ...] = (
    Job(HEARTBEAT_JOB, lambda s: IntervalTrigger(seconds=HEARTBEAT_SECONDS), _heartbeat,
        "records that the scheduler is alive"),
    Job("sweeps", lambda s: CronTrigger(hour=s.digest_hour, minute=0, timezone=s.tz), _sweeps,
        "reminders, dunning, suspensions, removals, credit warnings, digest"),
)


def start_scheduler(services: Any) -> BackgroundScheduler:
    """Start every job of :data:`JOBS`; a run missed while down is run once when we are back."""
    scheduler = BackgroundScheduler(timezone=services.settings.tz, job_defaults={
        "coalesce": True, "max_instances": 1, "misfire_grace_time": 6 * 3600})
    for job in JOBS:
        scheduler.add_job(jobs.run_job, job.trigger(services.settings), id=job.name, name=job.description,
                          args=(services, job.name, lambda job=job: job.run(services)))
    scheduler.start()
    jobs.run_job(services, HEARTBEAT_JOB, lambda: None)  # so /healthz sees us at once
    log.info("scheduler started: %s", ", ".join(
        f"{j.id} next at {j.next_run_time:%Y-%m-%d %H:%M %Z}" for j in scheduler.get_jobs()))
    return scheduler
