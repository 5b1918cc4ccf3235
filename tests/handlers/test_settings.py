"""Settings: defaults from INTERFACE.md, environment over TOML, one clear line for bad values."""
from pathlib import Path

import pytest

from handlers.errors import SettingsError
from handlers.settings import Settings, load_settings

README = Path(__file__).resolve().parents[2] / "README.md"


def test_defaults_are_the_documented_ones():
    s = load_settings({})
    assert (s.database_url, s.port, s.smtp_host, s.smtp_port) == ("sqlite:///./renewdesk.db", 8000, "127.0.0.1", 2525)
    assert (s.mail_domain, s.outbound_smtp_url, s.timezone) == ("desk.example.test", "smtp://127.0.0.1:25", "UTC")
    assert s.secret_key is None and s.slack_bot_token is None and s.imap_url is None


def test_environment_wins_over_the_toml_file(tmp_path):
    """The file may use field names or environment names; the environment overrides both."""
    cfg = tmp_path / "renewdesk.toml"
    cfg.write_text('mail_domain = "file.example.test"\nPORT = 9000\ntimezone = "Europe/Amsterdam"\n')
    s = load_settings({"RENEWDESK_CONFIG": str(cfg), "PORT": "9100"})
    assert (s.mail_domain, s.port, s.timezone) == ("file.example.test", 9100, "Europe/Amsterdam")
    assert s.tz.key == "Europe/Amsterdam"


@pytest.mark.parametrize("env, message", [
    ({"DATABASE_URL": "not a url"}, "DATABASE_URL: not a database URL"),
    ({"DATABASE_URL": "mysql://x@y/z"}, "DATABASE_URL: unsupported database 'mysql'"),
    ({"PORT": "eighty"}, "PORT: not a number"),
    ({"PORT": "70000"}, "PORT: not a port number"),
    ({"RENEWDESK_TIMEZONE": "Mars/Olympus"}, "RENEWDESK_TIMEZONE: unknown timezone"),
    ({"RENEWDESK_OUTBOUND_SMTP_URL": "http://relay"}, "RENEWDESK_OUTBOUND_SMTP_URL: must start with smtp://"),
    ({"RENEWDESK_CONFIG": "/nonexistent.toml"}, "RENEWDESK_CONFIG: no such file"),
])
def test_bad_settings_name_the_setting(env, message):
    with pytest.raises(SettingsError) as err:
        load_settings(env)
    assert err.value.message.startswith(message)


def test_unknown_key_in_toml_is_refused(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('mail_domian = "typo.test"\n')
    with pytest.raises(SettingsError, match="unknown setting 'mail_domian'"):
        load_settings({"RENEWDESK_CONFIG": str(cfg)})


def test_readme_documents_every_setting_with_its_default():
    """The README's settings table names every environment variable the Settings object reads."""
    text = README.read_text()
    for _field, env, default, _doc in Settings.documented():
        row = next((line for line in text.splitlines() if line.startswith(f"| `{env}`")), None)
        assert row is not None, f"{env} is missing from the README's settings table"
        if default is not None:
            assert str(default) in row, f"{env}: README does not show the default {default!r}"
