"""A real Dovecot IMAP server in a temporary directory on a free loopback port, for the IMAP door.

Each test takes a user of its own from a pool listed in the passwd-file at start (Dovecot
re-reads that file only when its mtime changes, which can miss additions made within the
same second), so every test begins with empty folders and no test sees another's mail.
"""
from __future__ import annotations

import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.support.servers import free_port, unavailable, wait_for_port

PASSWORD = "secret"
POOL = 400  # users listed up front: u1@example.test ... u400@example.test, plus test@example.test

CONFIG = """\
protocols = imap
listen = 127.0.0.1
base_dir = {dir}/run
state_dir = {dir}/state
log_path = {dir}/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
default_internal_user = {user}
default_login_user = {login_user}
first_valid_uid = 1
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
}}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {dir}/users
}}
userdb {{
  driver = static
  args = uid={user} gid={group} home={dir}/mail/%u
}}
mail_location = maildir:~/Maildir
"""


def _binary() -> str | None:
    return shutil.which("dovecot") or next(
        (p for p in ("/usr/sbin/dovecot", "/usr/local/sbin/dovecot") if os.access(p, os.X_OK)), None)


class DovecotServer:
    """``dovecot -c DIR/dovecot.conf`` with a pool of users; ``new_user()`` hands out the next one."""

    def __init__(self) -> None:
        self.binary = _binary()
        if self.binary is None:
            unavailable("Dovecot is not installed (apt-get install dovecot-imapd)")
        if os.geteuid() == 0:
            # the package's users: mail is owned by dovecot, logins run as dovenull
            try:
                pw = pwd.getpwnam("dovecot")
                pwd.getpwnam("dovenull")
            except KeyError:
                unavailable("Dovecot's dovecot/dovenull users are missing (reinstall dovecot-core)")
            self.user, self.login_user, self.group = "dovecot", "dovenull", pw.pw_gid
        else:
            # unprivileged: every Dovecot process runs as the current user
            me = pwd.getpwuid(os.geteuid())
            self.user = self.login_user = me.pw_name
            self.group = me.pw_gid
        self.dir = Path(tempfile.mkdtemp(prefix="renewdesk-dovecot-"))
        self.port = free_port()
        self.host = "127.0.0.1"
        self._users = itertools.count(1)

    @property
    def conf(self) -> Path:
        return self.dir / "dovecot.conf"

    def start(self) -> "DovecotServer":
        self.dir.chmod(0o755)  # dovecot's own users must reach the config and the mail
        mail = self.dir / "mail"
        mail.mkdir()
        if os.geteuid() == 0:
            pw = pwd.getpwnam(self.user)
            os.chown(mail, pw.pw_uid, pw.pw_gid)
        names = ["test@example.test", *(f"u{i}@example.test" for i in range(1, POOL + 1))]
        (self.dir / "users").write_text("".join(f"{n}:{{PLAIN}}{PASSWORD}::::::\n" for n in names))
        self.conf.write_text(CONFIG.format(dir=self.dir, port=self.port, user=self.user,
                                           login_user=self.login_user, group=self.group))
        # to a file, not a pipe: the daemon keeps its inherited output open and a pipe would never close
        with open(self.dir / "start.out", "wb") as out:
            result = subprocess.run([self.binary, "-c", str(self.conf)], stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, timeout=30)
        if result.returncode != 0:
            output = (self.dir / "start.out").read_text(errors="replace").strip()
            raise RuntimeError(f"dovecot did not start: {output}\n{self.log()}")
        wait_for_port(self.port)
        return self

    def stop(self) -> None:
        try:
            subprocess.run([self.binary, "-c", str(self.conf), "stop"], stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def log(self) -> str:
        path = self.dir / "dovecot.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def new_user(self) -> str:
        """A user nobody has logged in as yet: empty INBOX, no other folders."""
        n = next(self._users)
        if n > POOL:
            raise RuntimeError(f"more than {POOL} IMAP tests in one session: raise POOL in tests/support/dovecot.py")
        return f"u{n}@example.test"

    def url(self, user: str, folder: str = "INBOX", port: int | None = None) -> str:
        """The door's URL for ``user`` (through ``port``, e.g. a proxy, when given)."""
        return f"imap://{user.replace('@', '%40')}:{PASSWORD}@{self.host}:{port or self.port}/{folder}"


@pytest.fixture(scope="session")
def dovecot_server():
    """One Dovecot for the whole session."""
    server = DovecotServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def imap_user(dovecot_server) -> str:
    """A fresh mailbox for one test: a user of its own."""
    return dovecot_server.new_user()
