"""Real servers for tests, each in a temporary directory on a free loopback port.

When a server's binaries are missing the tests that need it skip with the reason, unless
``RENEWDESK_REQUIRE_SERVERS=1`` (set by ``.ci/run``) turns the skip into a failure.
"""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

REQUIRE = os.environ.get("RENEWDESK_REQUIRE_SERVERS") == "1"


def unavailable(reason: str) -> None:
    """Skip (on a laptop without the server) or fail (in CI, where it must be there)."""
    if REQUIRE:
        pytest.fail(f"{reason} (RENEWDESK_REQUIRE_SERVERS=1: .ci/run installs it)", pytrace=False)
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def _pg_bindir() -> Path | None:
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if Path(candidate, "initdb").exists():
            return Path(candidate)
    found = shutil.which("initdb")
    return Path(found).parent if found else None


class PostgresServer:
    """``initdb`` + ``pg_ctl`` in a temporary directory; as root, run as the postgres user."""

    def __init__(self) -> None:
        self.bindir = _pg_bindir()
        if self.bindir is None:
            unavailable("PostgreSQL is not installed (apt-get install postgresql)")
        self.dir = Path(tempfile.mkdtemp(prefix="renewdesk-pg-"))
        self.port = free_port()
        self.as_root = os.geteuid() == 0
        self.running = False
        if self.as_root:
            try:
                pw = pwd.getpwnam("postgres")
            except KeyError:
                unavailable("running as root but there is no postgres user to run initdb as")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)

    def _run(self, *args: str) -> None:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self.as_root:
            cmd = ["su", "postgres", "-s", "/bin/sh", "-c", " ".join(_quote(a) for a in cmd)]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120)

    def start(self) -> "PostgresServer":
        data = self.dir / "data"
        self._run("initdb", "-D", str(data), "-A", "trust", "-U", "rd", "-E", "UTF8", "--no-sync")
        self.resume()
        return self

    def resume(self) -> None:
        """Start the server on its data directory and port (after :meth:`halt`, a database outage)."""
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off " \
               f"-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        self._run("pg_ctl", "-D", str(self.dir / "data"), "-l", str(self.dir / "log"), "-w", "-o", opts, "start")
        self.running = True

    def halt(self) -> None:
        """Stop the server as an operator does (``-m fast``: clients are cut off, every commit is
        kept), leaving its data for :meth:`resume`."""
        self._run("pg_ctl", "-D", str(self.dir / "data"), "-m", "fast", "-w", "stop")
        self.running = False

    def stop(self) -> None:
        try:
            if self.running:
                self._run("pg_ctl", "-D", str(self.dir / "data"), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://rd@127.0.0.1:{self.port}/{database}"


def _quote(arg: str) -> str:
    import shlex
    return shlex.quote(arg)
