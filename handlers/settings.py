"""The one Settings object: built once per process from the environment, then an optional TOML file.

Nothing else in renewdesk reads ``os.environ``. Every setting has an environment name, a
default and a line of documentation; the README's settings table lists them all (a test
keeps the two in step).
"""
from __future__ import annotations

import dataclasses
import os
import tomllib
import zoneinfo
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlsplit

from handlers.errors import SettingsError


def _setting(env: str, default: Any, doc: str) -> Any:
    return field(default=default, metadata={"env": env, "doc": doc})


@dataclass(frozen=True)
class Settings:
    """Every knob of renewdesk, with its default. Build with :func:`load_settings`."""

    database_url: str = _setting(
        "DATABASE_URL", "sqlite:///./renewdesk.db",
        "any SQLAlchemy URL; `postgresql+psycopg://user:pass@host/db` for PostgreSQL")
    port: int = _setting("PORT", 8000, "web: Slack endpoint, renewal pages, `/healthz`")
    web_host: str = _setting("RENEWDESK_WEB_HOST", "127.0.0.1", "address the web process binds")
    smtp_host: str = _setting("RENEWDESK_SMTP_HOST", "127.0.0.1", "inbound SMTP/LMTP address")
    smtp_port: int = _setting("RENEWDESK_SMTP_PORT", 2525, "inbound SMTP/LMTP port")
    mail_domain: str = _setting(
        "RENEWDESK_MAIL_DOMAIN", "desk.example.test",
        "the domain whose addresses the bot owns (support@, billing@, renew+...@)")
    mail_aliases: str = _setting(
        "RENEWDESK_MAIL_ALIASES", "", "more domains (comma-separated) whose mail the bot accepts as its own")
    max_message_bytes: int = _setting(
        "RENEWDESK_MAX_MESSAGE_BYTES", 26214400, "largest message accepted by any door (SMTP SIZE, pipe, IMAP)")
    smtp_tls_cert: str | None = _setting(
        "RENEWDESK_SMTP_TLS_CERT", None, "certificate (PEM) for inbound STARTTLS; unset: no STARTTLS")
    smtp_tls_key: str | None = _setting("RENEWDESK_SMTP_TLS_KEY", None, "private key (PEM) for inbound STARTTLS")
    smtp_max_per_peer: int = _setting(
        "RENEWDESK_SMTP_MAX_PER_PEER", 20, "simultaneous inbound connections allowed from one address")
    sender_hourly_cap: int = _setting(
        "RENEWDESK_SENDER_HOURLY_CAP", 30,
        "messages per sender per hour before further mail is stored as throttled (never auto-answered)")
    imap_after: str = _setting(
        "RENEWDESK_IMAP_AFTER", "seen", "what the IMAP door does once a message is stored: `seen`, "
        "`move:FOLDER` or `delete`")
    imap_batch: int = _setting("RENEWDESK_IMAP_BATCH", 50, "messages fetched per IMAP round trip")
    imap_poll_seconds: float = _setting(
        "RENEWDESK_IMAP_POLL_SECONDS", 60.0, "polling interval when the server has no IDLE (and IDLE's renewal)")
    inbox_poll_seconds: float = _setting(
        "RENEWDESK_INBOX_POLL_SECONDS", 2.0, "how often the inbox processor looks for new mail")
    max_attachment_bytes: int = _setting(
        "RENEWDESK_MAX_ATTACHMENT_BYTES", 10485760,
        "attachments larger than this are recorded on the ticket by name and size only")
    unknown_senders: str = _setting(
        "RENEWDESK_UNKNOWN_SENDERS", "hold", "mail from an address that is no contact: `hold` for staff "
        "(`inbox attach`), or `answer` with a polite note saying how to reach us (rate-limited)")
    ticket_reopen_days: int = _setting(
        "RENEWDESK_TICKET_REOPEN_DAYS", 30,
        "a reply to a ticket closed longer than this opens a new ticket linked to the old one")
    auto_answer_cap: int = _setting(
        "RENEWDESK_AUTO_ANSWER_CAP", 10,
        "automatic answers per ticket and per recipient within the window; more are held back and staff told")
    auto_answer_window_minutes: int = _setting(
        "RENEWDESK_AUTO_ANSWER_WINDOW_MINUTES", 10, "the window of the automatic-answer cap")
    trusted_authserv_ids: str = _setting(
        "RENEWDESK_TRUSTED_AUTHSERV_IDS", "", "receiving servers (comma-separated authserv-ids) whose "
        "Authentication-Results headers are believed; accounts may require a DMARC pass from them")
    db_busy_timeout: float = _setting(
        "RENEWDESK_DB_BUSY_TIMEOUT", 10.0,
        "seconds a SQLite writer waits for its turn, and again for the lock, before giving up (451)")
    db_start_wait: float = _setting(
        "RENEWDESK_DB_START_WAIT", 60.0, "seconds a long-running process (run, web, worker, smtp, imap) waits "
        "for an unreachable database when it starts, trying again every 2 s, before it exits 75; 0 gives up at once")
    business_name: str = _setting(
        "RENEWDESK_BUSINESS_NAME", "Example Hosting", "the name clients see in emails and pages")
    outbound_smtp_url: str = _setting(
        "RENEWDESK_OUTBOUND_SMTP_URL", "smtp://127.0.0.1:25",
        "relay for outgoing mail: `smtp://` (STARTTLS when offered) or `smtps://`, optional "
        "`user:pass@`; query `?starttls=require`, `?cafile=PATH`")
    public_url: str = _setting("RENEWDESK_PUBLIC_URL", "http://127.0.0.1:8000", "base of links in emails")
    timezone: str = _setting(
        "RENEWDESK_TIMEZONE", "UTC", "the business's timezone for \"which day\" and \"which hour\"")
    secret_key: str | None = _setting(
        "RENEWDESK_SECRET_KEY", None, "HMAC key for tokens and tags; generated into the database on first run")
    slack_bot_token: str | None = _setting("SLACK_BOT_TOKEN", None, "the Slack app's bot token (unset: Slack off)")
    slack_signing_secret: str | None = _setting(
        "SLACK_SIGNING_SECRET", None, "the Slack app's signing secret (unset: Slack off)")
    slack_app_token: str | None = _setting("SLACK_APP_TOKEN", None, "Socket Mode instead of HTTP")
    slack_channel: str | None = _setting(
        "RENEWDESK_SLACK_CHANNEL", None, "the staff channel's id for cards and digests")
    slack_api_url: str | None = _setting(
        "SLACK_API_URL", None, "base URL of the Slack Web API (unset: Slack's own)")
    imap_url: str | None = _setting(
        "RENEWDESK_IMAP_URL", None, "mailbox to poll: `imaps://user:pass@host/INBOX`, or `imap://` (STARTTLS "
        "when offered); `?cafile=PATH` for a private CA")
    templates_dir: str | None = _setting(
        "RENEWDESK_TEMPLATES_DIR", None, "an operator's templates folder; its files override ours one by one, "
        "and an edited file is used within a second, without a restart")
    digest_hour: int = _setting("RENEWDESK_DIGEST_HOUR", 8, "hour (business timezone) of the daily sweeps and digest")
    outbox_poll_seconds: float = _setting(
        "RENEWDESK_OUTBOX_POLL_SECONDS", 5.0, "how often the delivery loop looks for due outgoing mail")
    outbox_burst_hold_seconds: float = _setting(
        "RENEWDESK_OUTBOX_BURST_HOLD_SECONDS", 5.0,
        "while the inbox has mail not yet processed, the delivery loop waits for it, but lets no due mail "
        "wait longer than this; 0: deliver at once")
    outbox_max_attempts: int = _setting(
        "RENEWDESK_OUTBOX_MAX_ATTEMPTS", 8, "delivery attempts before an outgoing mail is marked failed")
    outbox_backoff_seconds: int = _setting(
        "RENEWDESK_OUTBOX_BACKOFF_SECONDS", 60, "first retry delay; doubles each attempt (capped at 6 hours)")
    outbox_lease_seconds: int = _setting(
        "RENEWDESK_OUTBOX_LEASE_SECONDS", 600,
        "a claimed row older than this is recovered from a crashed delivery worker")
    invoice_reminder_days: str = _setting(
        "RENEWDESK_INVOICE_REMINDER_DAYS", "5", "days before an invoice's pay-by date that a reminder goes out "
        "(comma-separated)")
    invoice_overdue_days: str = _setting(
        "RENEWDESK_INVOICE_OVERDUE_DAYS", "1,5,10", "days after the pay-by date that overdue notices go out "
        "(comma-separated)")
    invoice_advance_days: int = _setting(
        "RENEWDESK_INVOICE_ADVANCE_DAYS", 14, "days before a service's next due date that its recurring invoice is "
        "issued")
    suspend_after_days: int = _setting(
        "RENEWDESK_SUSPEND_AFTER_DAYS", 3,
        "days after the pay-by date that an account flagged for automatic suspension is suspended")
    removal_after_days: int = _setting(
        "RENEWDESK_REMOVAL_AFTER_DAYS", 30,
        "days after an automatic suspension for non-payment that the services are removed")
    removal_warning_days: int = _setting(
        "RENEWDESK_REMOVAL_WARNING_DAYS", 3, "days before removal that the client is warned")
    credit_warning_days: str = _setting(
        "RENEWDESK_CREDIT_WARNING_DAYS", "7,1", "warn when the balance is forecast to reach the credit limit within "
        "these many days (comma-separated)")
    credit_spending_days: int = _setting(
        "RENEWDESK_CREDIT_SPENDING_DAYS", 30, "days of past spending whose daily average forecasts the balance")
    staff_email: str | None = _setting(
        "RENEWDESK_STAFF_EMAIL", None, "where the daily staff digest is emailed (comma-separated; unset: no email)")
    renewal_reminder_months: str = _setting(
        "RENEWDESK_RENEWAL_REMINDER_MONTHS", "3,2,1", "renewal reminders this many calendar months before expiry "
        "(comma-separated)")
    renewal_reminder_days: str = _setting(
        "RENEWDESK_RENEWAL_REMINDER_DAYS", "15,5,4,3,2,1,0", "renewal reminders this many days before expiry "
        "(comma-separated; 0 is the deletion reminder on the day itself)")
    renewal_after_expiry_day: int = _setting(
        "RENEWDESK_RENEWAL_AFTER_EXPIRY_DAY", 1, "the post-expiry notice goes this many days after an expiry "
        "nobody renewed (1 to 5)")
    renewal_grace_days: int = _setting(
        "RENEWDESK_RENEWAL_GRACE_DAYS", 30, "days after expiry a service can still be renewed: it stays on the "
        "renewal page and its reply address keeps working")
    renewal_link_days: int = _setting(
        "RENEWDESK_RENEWAL_LINK_DAYS", 14, "days a staff renewal link or an activation code stays valid")
    sales_email: str | None = _setting(
        "RENEWDESK_SALES_EMAIL", None, "who completes renewal decisions for accounts without a sales contact "
        "(unset: the staff channel)")
    renewal_confirm_days: str = _setting(
        "RENEWDESK_RENEWAL_CONFIRM_DAYS", "", "days before expiry that an undecided domain's account is also "
        "emailed a confirmation request with an activation code (empty: none)")
    renewal_invoices: str = _setting(
        "RENEWDESK_RENEWAL_INVOICES", "on", "`on`: a renewal the client confirms (or an automatic one) raises its "
        "invoice at once; `off`: the sales contact invoices by hand")
    renew_before_payment: str = _setting(
        "RENEWDESK_RENEW_BEFORE_PAYMENT", "off", "`on`: the sales contact is asked to renew at the registry as soon "
        "as a renewal is decided; `off`: only once its invoice is paid")
    log_level: str = _setting("RENEWDESK_LOG_LEVEL", "INFO", "DEBUG, INFO, WARNING or ERROR")
    config_file: str | None = _setting(
        "RENEWDESK_CONFIG", None, "optional TOML file with any of these settings (environment wins)")

    @property
    def tz(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.timezone)

    @property
    def reminder_months(self) -> tuple[int, ...]:
        """Renewal reminder offsets in calendar months before expiry, largest first."""
        return _offsets("RENEWDESK_RENEWAL_REMINDER_MONTHS", self.renewal_reminder_months)

    @property
    def reminder_days(self) -> tuple[int, ...]:
        """Renewal reminder offsets in days before expiry, largest first (0: the day itself)."""
        return _offsets("RENEWDESK_RENEWAL_REMINDER_DAYS", self.renewal_reminder_days)

    @property
    def confirm_days(self) -> int | None:
        """Days before expiry of the sweep's confirmation request (None: off)."""
        found = _offsets("RENEWDESK_RENEWAL_CONFIRM_DAYS", self.renewal_confirm_days)
        if len(found) > 1:
            raise SettingsError("RENEWDESK_RENEWAL_CONFIRM_DAYS: one number of days (or empty), "
                                f"not {self.renewal_confirm_days!r}")
        return found[0] if found else None

    @property
    def invoice_renewals(self) -> bool:
        """Whether a renewal decision raises its invoice."""
        return _switch("RENEWDESK_RENEWAL_INVOICES", self.renewal_invoices)

    @property
    def sales_before_payment(self) -> bool:
        """Whether the sales contact is asked to renew before the renewal invoice is paid."""
        return _switch("RENEWDESK_RENEW_BEFORE_PAYMENT", self.renew_before_payment)

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def mail_domains(self) -> tuple[str, ...]:
        """Our domain and its aliases, lower-case."""
        extra = [d.strip().lower().lstrip("@") for d in self.mail_aliases.split(",") if d.strip()]
        return (self.mail_domain.lower(), *extra)

    @property
    def reminder_offsets(self) -> tuple[int, ...]:
        """Days before the pay-by date, largest first."""
        return tuple(sorted(day_list(self.invoice_reminder_days), reverse=True))

    @property
    def overdue_offsets(self) -> tuple[int, ...]:
        """Days after the pay-by date, smallest first."""
        return tuple(sorted(day_list(self.invoice_overdue_days)))

    @property
    def credit_warning_offsets(self) -> tuple[int, ...]:
        """Forecast windows in days, largest first (7 then 1)."""
        return tuple(sorted(day_list(self.credit_warning_days), reverse=True))

    def replace(self, **changes: Any) -> "Settings":
        return dataclasses.replace(self, **changes)

    @classmethod
    def documented(cls) -> list[tuple[str, str, Any, str]]:
        """(field, environment name, default, doc) for every setting, in order."""
        return [(f.name, f.metadata["env"], f.default, f.metadata["doc"]) for f in dataclasses.fields(cls)]


def day_list(text: str) -> list[int]:
    """``"1, 5,10"`` → ``[1, 5, 10]``; raises ValueError on anything but whole numbers >= 0."""
    days = [int(part) for part in str(text).replace(" ", "").split(",") if part]
    if any(d < 0 for d in days):
        raise ValueError("negative")
    return sorted(set(days))


def _coerce(name: str, env: str, raw: Any, kind: Any) -> Any:
    text = str(raw).strip() if not isinstance(raw, (int, float)) or isinstance(raw, bool) else raw
    try:
        if kind in ("int", int):
            return int(text)
        if kind in ("float", float):
            return float(text)
    except (TypeError, ValueError):
        raise SettingsError(f"{env}: not a number: {raw!r}") from None
    return None if text == "" else str(text)


def load_settings(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Build Settings from ``environ`` (default: the process environment), then the TOML file.

    The TOML file (named by ``RENEWDESK_CONFIG``) may use either the field names
    (``database_url = "..."``) or the environment names; the environment wins over the file,
    and keyword ``overrides`` win over both (tests use them).
    """
    environ = os.environ if environ is None else environ
    fields = {f.name: f for f in dataclasses.fields(Settings)}
    from_file: dict[str, Any] = {}
    config_path = overrides.get("config_file") or environ.get("RENEWDESK_CONFIG")
    if config_path:
        try:
            data = tomllib.loads(Path(config_path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise SettingsError(f"RENEWDESK_CONFIG: no such file: {config_path}") from None
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"RENEWDESK_CONFIG: {config_path} is not valid TOML: {exc}") from None
        by_env = {f.metadata["env"]: f.name for f in fields.values()}
        for key, value in data.items():
            name = key if key in fields else by_env.get(key) or by_env.get(key.upper())
            if name is None:
                raise SettingsError(f"{config_path}: unknown setting {key!r}")
            from_file[name] = value
    values: dict[str, Any] = {}
    for name, f in fields.items():
        env = f.metadata["env"]
        if name in overrides:
            values[name] = overrides[name]
            continue
        raw = environ.get(env)
        if raw is None and name in from_file:
            raw = from_file[name]
        if raw is not None:
            values[name] = _coerce(name, env, raw, f.type)
    settings = Settings(**values)
    validate(settings)
    return settings


def validate(settings: Settings) -> None:
    """Refuse settings that cannot work, with one line naming the setting."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(settings.database_url)
    except ArgumentError:
        raise SettingsError(f"DATABASE_URL: not a database URL: {settings.database_url!r}") from None
    if url.get_backend_name() not in ("sqlite", "postgresql"):
        raise SettingsError(
            f"DATABASE_URL: unsupported database {url.get_backend_name()!r} (use sqlite:/// or postgresql+psycopg://)")
    for env, port in (("PORT", settings.port), ("RENEWDESK_SMTP_PORT", settings.smtp_port)):
        if not 0 <= int(port) <= 65535:
            raise SettingsError(f"{env}: not a port number: {port}")
    try:
        zoneinfo.ZoneInfo(settings.timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise SettingsError(f"RENEWDESK_TIMEZONE: unknown timezone {settings.timezone!r}") from None
    if not 0 <= settings.digest_hour <= 23:
        raise SettingsError(f"RENEWDESK_DIGEST_HOUR: must be 0 to 23, not {settings.digest_hour}")
    scheme = urlsplit(settings.outbound_smtp_url).scheme
    if scheme not in ("smtp", "smtps"):
        raise SettingsError(
            f"RENEWDESK_OUTBOUND_SMTP_URL: must start with smtp:// or smtps://, not {settings.outbound_smtp_url!r}")
    if "@" in settings.mail_domain or "." not in settings.mail_domain:
        raise SettingsError(f"RENEWDESK_MAIL_DOMAIN: not a domain name: {settings.mail_domain!r}")
    if not settings.imap_after == "seen" and not settings.imap_after == "delete" \
            and not (settings.imap_after.startswith("move:") and len(settings.imap_after) > 5):
        raise SettingsError(f"RENEWDESK_IMAP_AFTER: `seen`, `move:FOLDER` or `delete`, not {settings.imap_after!r}")
    if settings.imap_url and urlsplit(settings.imap_url).scheme not in ("imap", "imaps"):
        raise SettingsError("RENEWDESK_IMAP_URL: must start with imap:// or imaps://")
    if bool(settings.smtp_tls_cert) != bool(settings.smtp_tls_key):
        raise SettingsError("RENEWDESK_SMTP_TLS_CERT and RENEWDESK_SMTP_TLS_KEY go together: set both or neither")
    if settings.unknown_senders not in ("hold", "answer"):
        raise SettingsError(f"RENEWDESK_UNKNOWN_SENDERS: `hold` or `answer`, not {settings.unknown_senders!r}")
    if settings.auto_answer_cap < 1 or settings.auto_answer_window_minutes < 1:
        raise SettingsError("RENEWDESK_AUTO_ANSWER_CAP and RENEWDESK_AUTO_ANSWER_WINDOW_MINUTES must be at least 1")
    for env, value in (("RENEWDESK_INVOICE_REMINDER_DAYS", settings.invoice_reminder_days),
                       ("RENEWDESK_INVOICE_OVERDUE_DAYS", settings.invoice_overdue_days),
                       ("RENEWDESK_CREDIT_WARNING_DAYS", settings.credit_warning_days)):
        try:
            day_list(value)
        except ValueError:
            raise SettingsError(f"{env}: whole numbers of days, comma-separated (like 1,5,10), not {value!r}") from None
    for env, number in (("RENEWDESK_SUSPEND_AFTER_DAYS", settings.suspend_after_days),
                        ("RENEWDESK_INVOICE_ADVANCE_DAYS", settings.invoice_advance_days),
                        ("RENEWDESK_REMOVAL_AFTER_DAYS", settings.removal_after_days),
                        ("RENEWDESK_REMOVAL_WARNING_DAYS", settings.removal_warning_days),
                        ("RENEWDESK_CREDIT_SPENDING_DAYS", settings.credit_spending_days)):
        if int(number) < (1 if env == "RENEWDESK_CREDIT_SPENDING_DAYS" else 0):
            raise SettingsError(f"{env}: must not be {'below 1' if env.endswith('SPENDING_DAYS') else 'negative'}, "
                                f"not {number}")
    for env, text in (("RENEWDESK_RENEWAL_REMINDER_MONTHS", settings.renewal_reminder_months),
                      ("RENEWDESK_RENEWAL_REMINDER_DAYS", settings.renewal_reminder_days)):
        _offsets(env, text)
    if not 1 <= settings.renewal_after_expiry_day <= 5:
        raise SettingsError("RENEWDESK_RENEWAL_AFTER_EXPIRY_DAY: must be 1 to 5 (the post-expiry notice goes "
                            f"within 5 days), not {settings.renewal_after_expiry_day}")
    for env, days in (("RENEWDESK_RENEWAL_GRACE_DAYS", settings.renewal_grace_days),
                      ("RENEWDESK_RENEWAL_LINK_DAYS", settings.renewal_link_days)):
        if not 1 <= days <= 366:
            raise SettingsError(f"{env}: must be 1 to 366 days, not {days}")
    # each raises SettingsError when malformed
    settings.confirm_days, settings.invoice_renewals, settings.sales_before_payment  # noqa: B018
    if settings.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise SettingsError(f"RENEWDESK_LOG_LEVEL: one of DEBUG, INFO, WARNING, ERROR, not {settings.log_level!r}")


def _offsets(env: str, text: str) -> tuple[int, ...]:
    """A comma-separated list of whole numbers 0 to 400, largest first (empty: none)."""
    values: list[int] = []
    for part in (text or "").split(","):
        if not part.strip():
            continue
        if not part.strip().isdigit() or int(part) > 400:
            raise SettingsError(f"{env}: not a comma-separated list of whole numbers (0 to 400): {text!r}")
        values.append(int(part))
    return tuple(sorted(set(values), reverse=True))


def _switch(env: str, text: str) -> bool:
    """``on``/``off`` (also true/false, yes/no, 1/0, any case)."""
    value = str(text).strip().lower()
    if value in ("on", "true", "yes", "1"):
        return True
    if value in ("off", "false", "no", "0"):
        return False
    raise SettingsError(f"{env}: `on` or `off`, not {text!r}")
