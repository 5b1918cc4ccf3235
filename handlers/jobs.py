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
from dataclasses import dataclass, field
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
SWEEP_MODULES: tuple[str, ...] = ("handlers.renewals.reminders", "handlers.renewals.automation",
                                  "handlers.billing.dunning", "handlers.billing.digest")


def register_sweep(sweep: Sweep) -> Sweep:
    if any(s.name == sweep.name for s in SWEEPS):
        raise ValueError(f"sweep {sweep.name!r} registered twice")
    SWEEPS.append(sweep)
    return sweep


class SweepFailed(Exception):
    """A sweep did what it could; ``failures`` name what it could not (an account, a batch).

    ``lines`` say what it did do: the other accounts' work is committed and stays done.
    """

    def __init__(self, lines: list[str], failures: list[str]) -> None:
        super().__init__("; ".join(failures))
        self.lines, self.failures = lines, failures


@dataclass
class SweepReport:
    """What a run of the sweeps did: its lines, and each sweep that failed with its error."""

    lines: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    def failure_text(self) -> str:
        return "; ".join(f"{name} ({error})" for name, error in self.failed.items())


SWEEP_RUN_PREFIX = "sweep:"   # job_run rows of each sweep kind: its last moment swept, outcome and error


def sweep_row_name(name: str) -> str:
    return f"{SWEEP_RUN_PREFIX}{name}"


def _load_sweeps() -> list[Sweep]:
    """Every sweep, in the order of :data:`SWEEP_MODULES` whatever imported them first (the digest last)."""
    for module in SWEEP_MODULES:
        importlib.import_module(module)
    rank = {m: i for i, m in enumerate(SWEEP_MODULES)}
    return sorted(SWEEPS, key=lambda s: rank.get(getattr(s.run, "__module__", ""), len(rank)))


def refuse_earlier(tx: Any, at: dt.datetime, names: list[str]) -> None:
    """Refuse a sweep as of a moment before one already swept: it would send notices already overtaken."""
    from handlers.errors import Conflict
    for name in names:
        row = tx.session.get(JobRun, sweep_row_name(name))
        if row is not None and row.watermark is not None and at < row.watermark:
            raise Conflict(f"refusing to sweep as of {at.isoformat(timespec='minutes')}: {name} was already swept "
                           f"as of {row.watermark.isoformat(timespec='minutes')}, and an earlier sweep would send "
                           "notices that later ones have overtaken",
                           hint="sweep --dry-run shows any moment without sending anything")


def record_sweep(tx: Any, name: str, at: dt.datetime, started: dt.datetime, error: str | None) -> None:
    """Record one sweep kind's run: the moment it swept (never moving back), its outcome and error."""
    row = tx.session.get(JobRun, sweep_row_name(name))
    if row is None:
        row = JobRun(name=sweep_row_name(name), runs=0)
        tx.session.add(row)
    if row.watermark is None or row.watermark < at:
        row.watermark = at
    row.last_started_at, row.last_finished_at = started, tx.now
    row.last_outcome, row.last_error = ("error", error[:2000]) if error else ("ok", None)
    row.runs = (row.runs or 0) + 1


def notify_failures(tx: Any, at: dt.datetime, failed: dict[str, str]) -> None:
    """Tell staff in the Slack channel which sweeps failed (nothing when Slack is not configured)."""
    from handlers import slack_cards
    text = (f":x: The sweep as of {at.isoformat(timespec='minutes')} failed in part: "
            + "; ".join(f"{name}: {error}" for name, error in failed.items())
            + ". The other sweeps are done. `renewdesk status` shows it; `renewdesk sweep` runs it again.")
    slack_cards.queue_post(tx, {"text": text[:3000]}, dedupe_key=f"sweep-failed:{at.isoformat()}:{','.join(failed)}",
                           meta={"card": "sweep_failed"})


def explain(exc: BaseException) -> str:
    """One line for a failure, naming the template file and line when a template is at fault."""
    where = ""
    filename = getattr(exc, "filename", None) or getattr(exc, "name", None)
    if filename and exc.__class__.__module__.startswith("jinja2"):
        line = getattr(exc, "lineno", None)
        where = f" (in {filename}" + (f", line {line}" if line else "") + ")"
    return f"{exc.__class__.__name__}: {exc}{where}"


def log_failure(logger: logging.Logger, exc: BaseException, message: str, *args: Any) -> None:
    """Log a failure: one line when the database is away (the outage is logged where it is met, and
    is nobody's fault), the traceback otherwise."""
    from handlers.errors import TemporaryFailure
    if isinstance(exc, TemporaryFailure):
        logger.error(message + ": %s", *args, exc)
    else:
        logger.exception(message, *args)


def _run_one(services: Any, sweep: Sweep, at: dt.datetime, dry_run: bool) -> tuple[list[str], str | None]:
    try:
        return sweep.run(services, at, dry_run) or [], None
    except SweepFailed as exc:
        return exc.lines, "; ".join(exc.failures)
    except Exception as exc:  # one sweep's trouble must not stop the others
        log_failure(log, exc, "sweep %s failed", sweep.name)
        return [], explain(exc)


def run_sweeps_report(services: Any, at: dt.datetime, *, dry_run: bool = False) -> SweepReport:
    """Run every registered sweep as of ``at``, each on its own: one failing leaves the others done.

    A real run as of a moment before one already swept is refused (see :func:`refuse_earlier`).
    """
    sweeps = _load_sweeps()
    report = SweepReport()
    if not sweeps:
        report.lines.append("no sweeps are registered in this version")
        return report
    if not dry_run:
        services.run(refuse_earlier, at, [s.name for s in sweeps], readonly=True)
    for sweep in sweeps:
        started = services.clock.now()
        done, error = _run_one(services, sweep, at, dry_run)
        report.lines.extend(f"{sweep.name}: {line}" for line in done)
        if error:
            report.failed[sweep.name] = error
            report.lines.append(f"{sweep.name}: FAILED: {error}")
        elif not done:
            report.lines.append(f"{sweep.name}: nothing to do")
        if not dry_run:
            for attempt in range(2):
                try:
                    services.run(record_sweep, sweep.name, at, started, error, actor="system:scheduler")
                    break
                except IntegrityError:  # another scheduler created the row first: update theirs
                    if attempt:
                        raise
    if report.failed and not dry_run:
        services.run(notify_failures, at, report.failed, actor="system:scheduler")
    return report


def run_sweeps(services: Any, at: dt.datetime, *, dry_run: bool = False) -> list[str]:
    """Run every registered sweep as of ``at``; lines say what happened (a failed sweep: ``NAME: FAILED: ...``)."""
    return run_sweeps_report(services, at, dry_run=dry_run).lines


class SweepsIncomplete(Exception):
    """Raised by :func:`sweeps_or_raise` so the job is recorded as failed; ``result`` is the report."""

    def __init__(self, report: SweepReport) -> None:
        super().__init__("sweeps failed: " + report.failure_text())
        self.result = report


def sweeps_or_raise(services: Any, at: dt.datetime) -> SweepReport:
    """The sweeps as a job: every one runs; if any failed, the job fails too (and says which)."""
    report = run_sweeps_report(services, at)
    if report.failed:
        raise SweepsIncomplete(report)
    return report


def sweep_names() -> list[str]:
    return [s.name for s in _load_sweeps()]


def missed_daily_run(tx: Any) -> bool:
    """True when today's daily sweep time has passed and some sweep has not swept as of it yet."""
    from handlers.billing.common import day_start, today
    sweeps = _load_sweeps()
    moment = day_start(tx, today(tx)) + dt.timedelta(hours=tx.settings.digest_hour)
    if tx.now < moment:
        return False
    for sweep in sweeps:
        row = tx.session.get(JobRun, sweep_row_name(sweep.name))
        if row is None or row.watermark is None or row.watermark < moment:
            return True
    return False


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


def _record(services: Any, name: str, **values: Any) -> bool:
    """:func:`_row`, except that a database that is away is logged in one line, not raised: the
    scheduler's next run records again (the outage itself is logged where it was met)."""
    from handlers.errors import TemporaryFailure
    try:
        _row(services, name, **values)
        return True
    except TemporaryFailure as exc:
        log.warning("job %s: could not record its run: %s", name, exc)
        return False


def run_job(services: Any, name: str, fn: Callable[[], Any]) -> Any:
    """Run ``fn`` as job ``name``, recording start, end and outcome; errors are logged, not raised."""
    if not _record(services, name, last_started_at=services.clock.now()):
        return None  # the database is away: nothing to run against; the next run does it
    try:
        result = fn()
    except Exception as exc:  # a job must not kill the scheduler; the error is kept for `status`
        log.error("job %s failed: %s", name, exc)
        log.debug("%s", traceback.format_exc())
        _record(services, name, last_finished_at=services.clock.now(), last_outcome="error",
                last_error=explain(exc)[:2000], runs=lambda r: (r.runs or 0) + 1)
        return getattr(exc, "result", None)  # a job that did part of its work says what it did
    _record(services, name, last_finished_at=services.clock.now(), last_outcome="ok", last_error=None,
            runs=lambda r: (r.runs or 0) + 1)
    return result
