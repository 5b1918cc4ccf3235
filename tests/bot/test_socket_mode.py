"""Socket Mode with a real local websocket: with SLACK_APP_TOKEN the bot asks apps.connections.open
(with the app token) for the URL, connects, acknowledges each envelope by its envelope_id within
Slack's 3 seconds, and runs what came in: a `/desk` command and a card's button change the database,
answer at the response_url and update the card. Started the way `renewdesk run` and `renewdesk web`
start it (``bootstrap.start_slack``), and as the real `renewdesk web` process. No signing secret:
nothing comes over HTTP."""
from __future__ import annotations

import pytest

from handlers.models import Ticket
from renewdesk.bootstrap import start_slack
from tests.bot.conftest import shown
from tests.handlers.billing_helpers import account, load
from tests.support import proc
from tests.support.mailflow import deliver, mail
from tests.support.servers import free_port
from tests.support.slack_api import button_press, desk_command
from tests.support.slack_socket import SocketModeServer

CARD = "1790000000.000001"


@pytest.fixture
def socket_server(fake_slack):
    with SocketModeServer() as server:
        fake_slack.socket_url = server.url
        yield server
    assert not server.violations, server.violations  # the app spoke websocket as RFC 6455 says


@pytest.fixture
def settings(settings):
    return settings.replace(slack_app_token="xapp-test", slack_signing_secret=None)


def _ticket(services):
    return services.run(lambda tx: (lambda t: (t.status.value, t.assignee))(tx.session.get(Ticket, 1)), readonly=True)


def _command(server, fake_slack, words, user):
    """Send `/desk words` as an envelope; returns (the ack, the answer at the response_url)."""
    before = len(fake_slack.of("response_url"))
    envelope_id = server.send("slash_commands", desk_command(words, user, fake_slack.response_url()),
                              accepts_response_payload=True)
    ack = server.wait_ack(envelope_id)
    return ack, envelope_id, fake_slack.wait_for("response_url", before + 1)[before].body


def _press(server, fake_slack, user, action_id, value):
    before = len(fake_slack.of("response_url"))
    envelope_id = server.send("interactive", button_press(user, action_id, value, block_id="card:ticket:1",
                                                          message_ts=CARD, response_url=fake_slack.response_url()))
    ack = server.wait_ack(envelope_id)
    return ack, envelope_id, fake_slack.wait_for("response_url", before + 1)[before].body


def test_socket_mode_command_and_button(services, team, fake_slack, socket_server):
    """The process's Slack side (delivery loop + Socket Mode) started as `renewdesk run` starts it."""
    stops = start_slack(services)
    try:
        socket_server.wait_connected()
        [opened] = fake_slack.of("apps.connections.open")
        assert opened.auth == "Bearer xapp-test" and socket_server.paths == ["/link/?ticket=test-ticket&app_id=A1"]
        load(services, account("acme"))
        deliver(services, mail("dev@acme.test", "Site down", "Down since 9."))
        assert fake_slack.wait_for("chat.postMessage")[0].body["text"].startswith("T-1 ")  # the loop posted the card

        ack, envelope_id, answer = _press(socket_server, fake_slack, "USUP", "ticket_take", "1")
        assert ack == {"envelope_id": envelope_id}
        assert "assigned to <@USUP>" in shown(answer) and _ticket(services) == ("open", "USUP")
        assert "assigned to <@USUP> by <@USUP>" in shown(fake_slack.wait_for("chat.update")[-1].body)

        ack, envelope_id, answer = _command(socket_server, fake_slack, "ticket close 1", "USUP")
        assert ack == {"envelope_id": envelope_id}
        assert "open → closed" in shown(answer) and answer["response_type"] == "ephemeral"
        assert _ticket(services) == ("closed", "USUP")
        update = fake_slack.wait_for("chat.update", 2)[-1].body
        assert update["ts"] == CARD and "closed by <@USUP>" in shown(update)

        # Slack asks the app to move to a new connection: it opens one and carries on there
        socket_server.send_message({"type": "disconnect", "reason": "refresh_requested"})
        socket_server.wait_connections(2)
        assert len(fake_slack.of("apps.connections.open")) == 2 and socket_server.pings >= 2

        # a stranger is acknowledged too (Slack would retry otherwise) and refused in the answer
        ack, envelope_id, answer = _command(socket_server, fake_slack, "ticket reopen 1", "UOTHER")
        assert ack == {"envelope_id": envelope_id} and "not on the renewdesk team" in shown(answer)
        assert len(fake_slack.of("chat.update")) == 2
    finally:
        for stop in reversed(stops):
            stop()


def test_renewdesk_web_connects_in_socket_mode(services, team, fake_slack, socket_server, cli_env):
    """The Procfile's `renewdesk web` with SLACK_APP_TOKEN (and no signing secret) answers `/desk` over
    the websocket and posts the card's update from its own delivery loop."""
    load(services, account("acme"))
    deliver(services, mail("dev@acme.test", "Site down", "Down since 9."))
    env = {**cli_env, "SLACK_APP_TOKEN": "xapp-test", "PORT": str(free_port())}
    del env["SLACK_SIGNING_SECRET"]
    web = proc.start("web", env=env)
    try:
        socket_server.wait_connected(timeout=30)
        fake_slack.wait_for("chat.postMessage")  # the card, posted by the process's delivery loop
        ack, envelope_id, answer = _command(socket_server, fake_slack, "ticket hold 1", "USUP")
        assert ack == {"envelope_id": envelope_id} and "open → on_hold" in shown(answer)
        assert _ticket(services) == ("on_hold", None)
        assert "put on hold by <@USUP>" in shown(fake_slack.wait_for("chat.update")[-1].body)
        ack, envelope_id, answer = _press(socket_server, fake_slack, "USUP", "ticket_close", "1")
        assert ack == {"envelope_id": envelope_id} and _ticket(services) == ("closed", None)
        assert "closed by <@USUP>" in shown(fake_slack.wait_for("chat.update", 2)[-1].body)
    finally:
        web.terminate()
        out = web.communicate(timeout=30)[0].decode()
    assert web.returncode == 0, out
