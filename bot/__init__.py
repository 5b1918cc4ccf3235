"""The Slack app: `/desk`, cards with buttons, ticket threads, modals and App Home (see docs/slack.md)."""
from bot.app import build_app, http_enabled, socket_mode_enabled

__all__ = ["build_app", "http_enabled", "socket_mode_enabled"]
