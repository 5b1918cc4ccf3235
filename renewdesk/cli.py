"""The `renewdesk` command: the Procfile's processes and the operator's tools.

Errors become one line on stderr and an exit code (see handlers.errors); nothing here holds a
business rule: each command calls an operation through ``services.run``.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from sqlalchemy.engine import make_url

from handlers.errors import RenewdeskError, TemporaryFailure
from handlers.settings import load_settings
from renewdesk import bootstrap

log = logging.getLogger("renewdesk")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("renewdesk")
    except PackageNotFoundError:  # pragma: no cover - run from a checkout that was never installed
        return "unknown (not installed)"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="renewdesk", description="Support and renewal bot: mail, Slack, scheduler.")
    p.add_argument("--version", action="version", version=f"renewdesk {_version()}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="everything in one process: web, SMTP, scheduler, inbox, outbox")
    run.add_argument("--demo", action="store_true", help="load the demo data set first if the database is empty")
    sub.add_parser("web", help="Slack endpoint, renewal pages and /healthz")
    smtp = sub.add_parser("smtp", help="inbound SMTP (or LMTP) into the inbox")
    smtp.add_argument("--lmtp", action="store_true")
    sub.add_parser("imap", help="poll RENEWDESK_IMAP_URL into the inbox")
    sub.add_parser("worker", help="scheduler, inbox processing, sweeps, outbox delivery")
    pipe = sub.add_parser("pipe", help="store one message from standard input (for an MTA pipe); "
                                       "exit 0 stored, 75 try later, 65 refused")
    pipe.add_argument("--recipient", help="the envelope recipient (e.g. Postfix ${recipient})")
    pipe.add_argument("--sender", help="the envelope sender (e.g. Postfix ${sender}); default: Return-Path")

    db = sub.add_parser("db", help="database schema")
    db.add_argument("action", choices=["upgrade", "current"])
    sub.add_parser("demo", help="load the demo data set")
    imp = sub.add_parser("import", help="create or update accounts, contacts, services, invoices from JSON")
    imp.add_argument("file")

    staff = sub.add_parser("staff", help="the staff grammar (what /desk answers in Slack); try `staff help`")
    staff.add_argument("--as", dest="as_user", metavar="SLACK_USER_ID")
    staff.add_argument("--json", action="store_true")
    staff.add_argument("words", nargs=argparse.REMAINDER)

    inbox = sub.add_parser("inbox", help="the inbound mail store: list [--quarantined] | show ID | retry ID|--all")
    inbox.add_argument("action", choices=["list", "show", "retry"])
    inbox.add_argument("id", nargs="?", type=int)
    inbox.add_argument("--quarantined", action="store_true", help="with list: only quarantined mail")
    inbox.add_argument("--all", action="store_true", help="with retry: every quarantined message")
    inbox.add_argument("--json", action="store_true")

    sweep = sub.add_parser("sweep", help="run the scheduled sweeps once")
    sweep.add_argument("--at", help="ISO date-time to sweep as of (default: now)")
    sweep.add_argument("--dry-run", action="store_true", help="print what would happen, change nothing")

    outbox = sub.add_parser("outbox", help="queued and failed outgoing mail and Slack posts: list | flush | retry ID")
    outbox.add_argument("action", choices=["list", "flush", "retry"])
    outbox.add_argument("id", nargs="?", help="with retry: a mail number (12) or a Slack post (S12), as listed")
    outbox.add_argument("--failed", action="store_true")
    outbox.add_argument("--json", action="store_true")

    status = sub.add_parser("status", help="health of every part")
    status.add_argument("--json", action="store_true")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings()
        bootstrap.configure_logging(settings)
        return COMMANDS[args.command](settings, args) or 0
    except RenewdeskError as exc:
        print(f"renewdesk: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(exc.hint, file=sys.stderr)
        # an MTA bounces the mail on most exit codes: for the pipe every failure means "try later"
        return 75 if args.command == "pipe" else exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `renewdesk ... | head`: the reader has gone; no traceback for that
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _services(settings: Any, **kw: Any) -> Any:
    return bootstrap.open_services(settings, **kw)


def _progress(what: str) -> Any:
    """A one-line counter on a terminal (nothing when output goes to a file or a pipe)."""
    if not sys.stderr.isatty():
        return None

    def show(done: int, total: int) -> None:
        print(f"\r{what}: {done}/{total} accounts", end="\n" if done >= total else "", file=sys.stderr, flush=True)
    return show


# -- processes --------------------------------------------------------------------------------

def cmd_run(settings: Any, args: argparse.Namespace) -> int:
    return bootstrap.run_all(settings, demo=args.demo)


def cmd_web(settings: Any, args: argparse.Namespace) -> int:
    return bootstrap.run_web(settings)


def cmd_worker(settings: Any, args: argparse.Namespace) -> int:
    return bootstrap.run_worker(settings)


def cmd_smtp(settings: Any, args: argparse.Namespace) -> int:
    return bootstrap.run_smtp(settings, lmtp=args.lmtp)


def cmd_imap(settings: Any, args: argparse.Namespace) -> int:
    return bootstrap.run_imap(settings)


def cmd_pipe(settings: Any, args: argparse.Namespace) -> int:
    from mail_ingest.pipe import pipe
    return pipe(settings, lambda: _services(settings), sys.stdin.buffer, recipient=args.recipient,
                sender=args.sender, err=lambda line: print(line, file=sys.stderr))


# -- operator tools ---------------------------------------------------------------------------

def cmd_db(settings: Any, args: argparse.Namespace) -> int:
    from renewdesk import migrate
    engine = bootstrap.open_engine(settings)
    if args.action == "upgrade":
        applied = migrate.upgrade(engine)
        print(f"database at {migrate.current_revision(engine)}" + ("" if applied else " (already up to date)"))
    else:
        print(migrate.current_revision(engine) or "empty")
    return 0


def cmd_demo(settings: Any, args: argparse.Namespace) -> int:
    from handlers.demo import load_demo
    services = _services(settings, upgrade=True)
    result = services.run(load_demo, _progress("loading demo"), actor="cli")
    print(f"demo data loaded: {result.summary()}")
    return 0


def cmd_import(settings: Any, args: argparse.Namespace) -> int:
    from handlers.importer import import_document, load_json
    data = load_json(args.file)
    result = _services(settings).run(import_document, data, _progress("importing"), actor="cli")
    print(f"imported: {result.summary()}")
    return 0


def cmd_staff(settings: Any, args: argparse.Namespace) -> int:
    from handlers.staff import envelope, execute
    services = _services(settings)
    words = list(args.words)
    try:
        reply = execute(services, words, as_user=args.as_user)
    except RenewdeskError as exc:
        if not args.json:
            raise
        print(json.dumps(envelope(exc), indent=2))
        return exc.exit_code
    print(json.dumps(envelope(reply), indent=2) if args.json else reply.text)
    return 0


def cmd_inbox(settings: Any, args: argparse.Namespace) -> int:
    from handlers import inbox
    from handlers.errors import InvalidInput
    services = _services(settings)
    if args.action == "list":
        rows = services.run(inbox.listing, quarantined=args.quarantined, readonly=True)
        print(json.dumps(rows, indent=2) if args.json else inbox.listing_text(rows))
    elif args.action == "show":
        if args.id is None:
            raise InvalidInput("usage: renewdesk inbox show ID")
        data = services.run(inbox.show, args.id, readonly=True)
        print(json.dumps(data, indent=2) if args.json else inbox.show_text(data))
    else:
        if (args.id is None) == (not args.all):
            raise InvalidInput("usage: renewdesk inbox retry ID | renewdesk inbox retry --all")
        ids = services.run(inbox.retry, None if args.all else args.id, actor="cli")
        services.inbox_wakeup.set()
        print(f"{len(ids)} message(s) queued for processing again" + (f": {', '.join(map(str, ids))}" if ids else ""))
    return 0


def cmd_sweep(settings: Any, args: argparse.Namespace) -> int:
    from handlers.errors import InvalidInput
    from handlers.jobs import refuse_earlier, run_job, run_sweeps_report, sweep_names, sweeps_or_raise
    services = _services(settings)
    at = services.clock.now()
    if args.at:
        try:
            at = dt.datetime.fromisoformat(args.at)
        except ValueError:
            raise InvalidInput(f"--at: not an ISO date-time: {args.at!r}") from None
        at = at if at.tzinfo else at.replace(tzinfo=settings.tz)
    if args.dry_run:
        report = run_sweeps_report(services, at, dry_run=True)
    else:
        services.run(refuse_earlier, at, sweep_names(), readonly=True)  # refused before anything is recorded
        report = run_job(services, "sweeps", lambda: sweeps_or_raise(services, at))
    print(f"sweep as of {at.isoformat(timespec='minutes')}{' (dry run)' if args.dry_run else ''}:")
    for line in report.lines:
        print(f"  {line}")
    if report.failed:
        print(f"renewdesk: the sweep failed: {report.failure_text()}; the other sweeps are done "
              "(`renewdesk status` shows it)", file=sys.stderr)
        return 1
    return 0


def cmd_outbox(settings: Any, args: argparse.Namespace) -> int:
    from handlers import outbox_ops
    from handlers.delivery import Deliverer, retry
    services = _services(settings)
    if args.action == "flush":
        report = Deliverer(services).deliver_due(limit=10_000)
        print(f"outbox flushed: {report.summary()}")
        failed = report.failed
        from handlers.slack_cards import enabled
        if enabled(settings):
            from bot.delivery import SlackDeliverer
            slack = SlackDeliverer(services).deliver_due(limit=10_000)
            print(f"Slack posts: {slack.sent} posted, {slack.retried} to retry, "
                  f"{slack.deferred} waiting, {slack.failed} failed")
            failed += slack.failed
        return 0 if not failed else 1
    if args.action == "retry":
        if args.id is None:
            raise RenewdeskError("usage: renewdesk outbox retry ID (a mail number, or S12 for a Slack post)")
        kind, row_id = outbox_ops.parse_ref(args.id)
        if kind == "slack":
            post = services.run(outbox_ops.retry_slack, row_id, actor="cli")
            print(f"Slack post S{post.id} ({post.method} to {post.channel}) is queued again")
            return 0
        row = services.run(retry, row_id, actor="cli")
        print(f"mail {row.id} to {', '.join(row.recipients)} is queued again")
        return 0
    rows = services.run(outbox_ops.listing, failed=args.failed, readonly=True)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(outbox_ops.listing_text(rows))
    return 0


def cmd_status(settings: Any, args: argparse.Namespace) -> int:
    from handlers import status
    from renewdesk import migrate
    where = make_url(settings.database_url).render_as_string(hide_password=True)
    if settings.is_sqlite and _sqlite_missing(settings.database_url):
        print(f"database   NONE: there is no database at {where}; `renewdesk db upgrade` (or `renewdesk run`) "
              "creates it")
        return 1
    if migrate.current_revision(bootstrap.open_engine(settings)) is None:
        print(f"database   EMPTY: {where} has no renewdesk tables; run `renewdesk db upgrade` (or `renewdesk run`)")
        return 1
    services = _services(settings, check=False)
    ok, data = status.safe_report(services)
    print(json.dumps(data, indent=2) if args.json else status.text(data))
    if not ok:
        raise TemporaryFailure("the database is unavailable")
    return 1 if data.get("failing") else 0  # a monitor sees a failing sweep by the exit status too


def _sqlite_missing(url: str) -> bool:
    """Whether the SQLite file of ``url`` is not there in a folder that is (a missing folder is a database
    that cannot be opened, said as such; an in-memory database is never missing)."""
    database = make_url(url).database
    return bool(database) and database != ":memory:" and not Path(database).exists() and Path(database).parent.is_dir()


COMMANDS = {
    "run": cmd_run, "web": cmd_web, "worker": cmd_worker,
    "smtp": cmd_smtp, "imap": cmd_imap, "pipe": cmd_pipe, "inbox": cmd_inbox,
    "db": cmd_db, "demo": cmd_demo, "import": cmd_import, "staff": cmd_staff,
    "sweep": cmd_sweep, "outbox": cmd_outbox, "status": cmd_status,
}

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
