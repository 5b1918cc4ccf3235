"""Bookkeeping for scheduled work: every run of a job is recorded in ``job_run``.

The sweeps registry lives here too: each later capability (renewal reminders, dunning,
suspensions, credit warnings) registers one sweep; the scheduler and ``renewdesk sweep``
run them in order.
"""
from __future__ import annotations

import datetime as dt
import importlib
import logging
import traceback
from dataclasses import dataclass
from typing import Any, Callable

from sqlalchemy.exc import IntegrityError

from handlers.models import JobRun

log = logging.getLogger("renewdesk.scheduler")


@dataclass(frozen=True)
class Sweep:
    """One sweep: ``run(services, at, dry_run)`` returns a list of lines saying what it did (or would)."""

    name: str
    run: Callable[[Any, dt.datetime, bool], list[str]]
    description: str


SWEEPS: list[Sweep] = []
# Modules whose import registers their sweeps; they run in the order registered (the digest
# last, so it reports what the others did).
SWEEP_MODULES: tuple[str, ...] = ("handlers.renewals.reminders", "handlers.renewals.automation", "handlers.billing.dunning",
                                  "handlers.billing.digest")


def register_sweep(sweep: Sweep) -> Sweep:
    if any(s.name == sweep.name for s in SWEEPS):
        raise ValueError(f"sweep {sweep.name!r} registered twice")
    SWEEPS.append(sweep)
    return sweep


def run_sweeps(services: Any, at: dt.datetime, *, dry_run: bool = False) -> list[str]:
    """Run every registered sweep as of ``at``; lines say what happened."""
    for module in SWEEP_MODULES:
        importlib.import_module(module)
    lines: list[str] = []
    if not SWEEPS:
        return ["no sweeps are registered in this version"]
    for sweep in SWEEPS:
        done = sweep.run(services, at, dry_run)
        lines.extend(f"{sweep.name}: {line}" for line in done) if done else lines.append(f"{sweep.name}: nothing to do")
    return lines


def _row(services: Any, name: str, **values: Any) -> None:
    """Update the job's row, creating it the first time (two workers may race: the key settles it)."""
    for _ in range(2):
        try:
            with services.db.transaction() as s:
                row = s.get(JobRun, name)
                if row is None:
                    row = JobRun(name=name, runs=0)
                    s.add(row)
                for key, value in values.items():
                    setattr(row, key, value(row) if callable(value) else value)
            return
        except IntegrityError:
            continue


def run_job(services: Any, name: str, fn: Callable[[], Any]) -> Any:
    """Run ``fn`` as job ``name``, recording start, end and outcome; errors are logged, not raised."""
    _row(services, name, last_started_at=services.clock.now())
    try:
        result = fn()
    except Exception as exc:  # a job must not kill the scheduler; the error is kept for `status`
        log.error("job %s failed: %s", name, exc)
        log.debug("%s", traceback.format_exc())
        _row(services, name, last_finished_at=services.clock.now(), last_outcome="error",
             last_error=f"{exc.__class__.__name__}: {exc}"[:2000], runs=lambda r: (r.runs or 0) + 1)
        return None
    _row(services, name, last_finished_at=services.clock.now(), last_outcome="ok", last_error=None,
         runs=lambda r: (r.runs or 0) + 1)
    return result
