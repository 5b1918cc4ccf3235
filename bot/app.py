"""Build the Slack app (slack-bolt) for a process: `build_app(services)`, no module-level App.

Over HTTP, slack-bolt checks every request's signature and timestamp (``SLACK_SIGNING_SECRET``)
before any listener runs; in Socket Mode (``SLACK_APP_TOKEN``) requests come over Slack's
websocket instead. Listeners acknowledge first and work after, in bolt's own threads.
"""
from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from slack_bolt import App

from bot import actions, desk, home, modals, threads
from bot.delivery import web_client
from handlers.errors import SettingsError

log = logging.getLogger("renewdesk.slack")
LISTENER_THREADS = 32   # listeners work after their ack; enough for a burst of commands


def http_enabled(settings: Any) -> bool:
    return bool(settings.slack_bot_token and settings.slack_signing_secret)


def socket_mode_enabled(settings: Any) -> bool:
    return bool(settings.slack_bot_token and settings.slack_app_token)


def build_app(services: Any) -> App:
    """The Slack app with every listener registered; Slack settings missing is one clear line."""
    s = services.settings
    if not s.slack_bot_token or not (s.slack_signing_secret or s.slack_app_token):
        raise SettingsError("Slack needs SLACK_BOT_TOKEN and SLACK_SIGNING_SECRET (or SLACK_APP_TOKEN for Socket Mode)")
    bolt_log = logging.getLogger("renewdesk.slack.bolt")
    level, bolt_log.level = bolt_log.level, logging.ERROR  # bolt warns when SLACK_BOT_TOKEN is also in the environment
    app = App(signing_secret=s.slack_signing_secret or "",
              request_verification_enabled=bool(s.slack_signing_secret), client=web_client(s),
              token_verification_enabled=False,  # no call to Slack at start-up: auth.test runs on first use
              listener_executor=ThreadPoolExecutor(max_workers=LISTENER_THREADS, thread_name_prefix="slack"),
              logger=bolt_log)
    bolt_log.setLevel(level)
    for module in (desk, actions, modals, threads, home):
        module.register(app, services)
    return app


def start_socket_mode(app: App, settings: Any) -> Any:
    """Connect over Socket Mode (slack_sdk's built-in client, no extra package); returns the handler."""
    from slack_bolt.adapter.socket_mode import SocketModeHandler

    handler = SocketModeHandler(app, app_token=settings.slack_app_token)
    handler.connect()
    log.info("slack: connected in Socket Mode")
    return handler
