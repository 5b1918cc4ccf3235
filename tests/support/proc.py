"""Running the `renewdesk` command as a real subprocess, with its own environment."""
from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def env_for(**settings: str) -> dict[str, str]:
    """A clean environment: only PATH-like basics plus the given renewdesk settings."""
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")}
    return {**keep, "PYTHONUNBUFFERED": "1", **settings}


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "renewdesk", *args]


def run(*args: str, env: dict[str, str], timeout: float = 60,
        input: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(command(*args), env=env, cwd=ROOT, capture_output=True, timeout=timeout, input=input)


def start(*args: str, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(command(*args), env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def wait_http(url: str, timeout: float = 30, proc: subprocess.Popen | None = None) -> tuple[int, bytes]:
    """Poll ``url`` until it answers (any status); fail early if ``proc`` died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process exited with {proc.returncode}: {proc.stdout.read().decode()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer in {timeout}s")
