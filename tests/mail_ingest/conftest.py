"""Fixtures shared by the mail tests."""
import pytest

from mail_ingest.smtp import DoorController
from tests.support.servers import free_port


@pytest.fixture
def door(services):
    controller = DoorController(services, host="127.0.0.1", port=free_port())
    controller.start()
    yield controller
    controller.stop()
