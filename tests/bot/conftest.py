"""The Slack app through the real web server, signed requests, and a local stand-in for Slack's API."""
from __future__ import annotations

import time

import httpx
import pytest

from bot.delivery import SlackDeliverer
from handlers.settings import load_settings
from handlers.staff import execute
from renewdesk.runtime import WebServer, bind
from renewdesk.web import build_web_app
from tests.support import proc
from tests.support.slack_api import FakeSlack, SlackSender
from tests.support.smtp_sink import SmtpSink

SECRET = "test-signing-secret"
CHANNEL = "CSTAFF"
TEAM = {"UADMIN": "admin", "UBILL": "billing", "USUP": "support", "UREAD": "readonly"}


@pytest.fixture
def fake_slack():
    with FakeSlack() as fake:
        yield fake
    assert not fake.violations, fake.violations  # we sent something real Slack refuses


@pytest.fixture
def sink():
    with SmtpSink() as running:
        yield running


@pytest.fixture
def settings(db_url, fake_slack, sink):
    return load_settings({}, database_url=db_url, secret_key="test-secret", mail_domain="desk.example.test",
                         outbound_smtp_url=sink.url, slack_bot_token="xoxb-test",
                         slack_signing_secret=SECRET, slack_channel=CHANNEL, slack_api_url=fake_slack.api_url)


@pytest.fixture
def cli_env(db_url, fake_slack, sink):
    """The environment of a real `renewdesk` process on the test's database, Slack stand-in and SMTP sink."""
    return proc.env_for(DATABASE_URL=db_url, RENEWDESK_SECRET_KEY="test-secret", SLACK_BOT_TOKEN="xoxb-test",
                        SLACK_SIGNING_SECRET=SECRET, RENEWDESK_SLACK_CHANNEL=CHANNEL,
                        SLACK_API_URL=fake_slack.api_url, RENEWDESK_OUTBOUND_SMTP_URL=sink.url,
                        RENEWDESK_MAIL_DOMAIN="desk.example.test")


@pytest.fixture
def team(services):
    for user, role in TEAM.items():
        execute(services, f"team add {user} {role}", as_user=None)
    return TEAM


@pytest.fixture
def web_url(services):
    sock = bind("127.0.0.1", 0, "the web app", "PORT")
    port = sock.getsockname()[1]
    server = WebServer(build_web_app(services), sock)
    server.start()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code in (200, 503):
                break
        except httpx.HTTPError:
            time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def sender(web_url, fake_slack):
    s = SlackSender(f"{web_url}/slack/events", SECRET, fake_slack)
    yield s
    s.client.close()


@pytest.fixture
def deliverer(services):
    return SlackDeliverer(services, pace_seconds=0)


class Desk:
    """Types `/desk WORDS` as a user and waits for the answer at the response_url."""

    def __init__(self, sender: SlackSender, fake: FakeSlack):
        self.sender, self.fake = sender, fake

    def __call__(self, words: str, user: str = "UADMIN") -> dict:
        before = len(self.fake.of("response_url"))
        started = time.monotonic()
        response = self.sender.command(words, user)
        assert response.status_code == 200, response.text
        assert time.monotonic() - started < 3, "acknowledged too late"
        return self.fake.wait_for("response_url", before + 1)[before].body


@pytest.fixture
def desk(sender, fake_slack, team):
    return Desk(sender, fake_slack)


def shown(message: dict) -> str:
    """Every text of a Block Kit message, joined (what a person would read)."""
    parts = [message.get("text", "")]
    for block in message.get("blocks", []):
        text = block.get("text")
        parts.append(text.get("text", "") if isinstance(text, dict) else "")
        parts += [e.get("text", "") if isinstance(e.get("text"), str) else (e.get("text") or {}).get("text", "")
                  for e in block.get("elements", [])]
    return "\n".join(parts)
