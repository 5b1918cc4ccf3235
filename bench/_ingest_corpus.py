"""The mail and the peer for bench.ingest: the generator's corpus, its client pool, threading, the peer run.

Kept apart from bench/ingest.py (which runs the servers and times them); `make bench` skips
modules whose name starts with an underscore.
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from email.parser import BytesHeaderParser
from email.utils import parseaddr
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RCPT = "support@desk.example.test"
OUR_VENV = ROOT / ".peer" / "venv"
# the peer's reply headers cite a Message-ID the peer never sent: "<ticket-ID.N@example-hosting.test>"
_PEER_REF = re.compile(rb"^(In-Reply-To|References):[ \t]*<ticket-(\d+)\.\d+@[^>\r\n]*>[ \t]*\r?\n", re.I | re.M)


def peer_dir(option: str | None) -> Path:
    """--peer-dir, else RENEWDESK_PEER_DIR, else ../shared/peers/django-helpdesk beside the checkout."""
    path = Path(option or os.environ.get("RENEWDESK_PEER_DIR")
                or ROOT.parent / "shared" / "peers" / "django-helpdesk").resolve()
    if not (path / "gen_emails.py").is_file():
        sys.exit(f"bench.ingest: no gen_emails.py in {path} (give --peer-dir or RENEWDESK_PEER_DIR)")
    return path


def system_python() -> str:
    """The generator and the peer's runner need only the standard library: run them as the peer does."""
    return "/usr/bin/python3" if Path("/usr/bin/python3").exists() else (shutil.which("python3") or sys.executable)


def generate(peer: Path, out: Path, count: int, seed: int, start: int, reply_ids: Path | None = None) -> dict:
    """gen_emails.py exactly as the peer's bench.py calls it, but addressed to our support address."""
    cmd = [system_python(), str(peer / "gen_emails.py"), "--out", str(out), "--count", str(count),
           "--seed", str(seed), "--start-index", str(start), "--to", RCPT]
    if reply_ids is not None:
        cmd += ["--reply-ids", str(reply_ids)]
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout)


def client_pool(peer: Path, seed: int, count: int) -> list[dict]:
    """The senders gen_emails.py draws from for (seed, count): its Generator makes them first."""
    spec = importlib.util.spec_from_file_location("_peer_gen_emails", peer / "gen_emails.py")
    module = importlib.util.module_from_spec(spec)
    was, sys.dont_write_bytecode = sys.dont_write_bytecode, True  # the peer's folder may be read-only
    try:
        spec.loader.exec_module(module)
    finally:
        sys.dont_write_bytecode = was
    return module.Generator(seed, "support", RCPT, clients=max(20, count // 3)).clients


def account_document(pools: list[list[dict]]) -> dict:
    """One master account whose contacts are every client of the pools (all may open tickets)."""
    contacts: dict[str, dict] = {}
    for pool in pools:
        for c in pool:
            contacts.setdefault(c["addr"].lower(), {"email": c["addr"], "name": c["name"],
                                                    "permissions": ["tickets"]})
    return {"accounts": [{"ref": "bench-clients", "name": "Bench Clients Ltd", "currency": "EUR",
                          "owner": {"email": "owner@bench-clients.test", "name": "Bench Owner"},
                          "contacts": list(contacts.values())}]}


def messages(folder: Path) -> list[tuple[str, bytes]]:
    """(envelope sender = the From address, CRLF bytes) for every file, in file order."""
    parser, out = BytesHeaderParser(), []
    for path in sorted(folder.glob("*.eml")):
        raw = path.read_bytes()
        sender = parseaddr(str(parser.parsebytes(raw, headersonly=True).get("From", "")))[1]
        out.append((sender, raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")))
    return out


def ids_file(path: Path, tickets: list[tuple[int, str]], seed_msgs: list[tuple[str, bytes]]) -> str:
    """What the peer's `peer_admin.py ticket-ids` writes: "ID SUBMITTER" per ticket.

    Our tickets when the seed made any; otherwise the seed mails' senders numbered 1..S (the
    ids the peer's seed gets), so the corpus keeps its 60/40 mix even before tickets exist.
    """
    rows = tickets or [(i, sender) for i, (sender, _raw) in enumerate(seed_msgs, 1)]
    path.write_text("".join(f"{tid} {email}\n" for tid, email in rows))
    return "our tickets" if tickets else "seed mails numbered 1..S (no tickets were made)"


def thread_replies(msgs: list[tuple[str, bytes]], refs: dict[int, tuple[str | None, str]]) -> tuple[int, int]:
    """Make each reply cite what our ticket really sent, as the client's mailer would.

    ``refs`` maps our ticket id to (the client's original Message-ID, our acknowledgement's
    Message-ID). In-Reply-To becomes the acknowledgement's, References both. Returns (replies,
    rethreaded); replies to a ticket without an acknowledgement keep the generator's headers.
    """
    replies = rethreaded = 0
    for i, (sender, raw) in enumerate(msgs):
        head_end = raw.find(b"\r\n\r\n")
        head, body = raw[:head_end + 2], raw[head_end + 2:]
        found = {m.group(1).lower(): int(m.group(2)) for m in _PEER_REF.finditer(head)}
        if not found:
            continue
        replies += 1
        ticket = found.get(b"in-reply-to") or next(iter(found.values()))
        if ticket not in refs:
            continue
        original, ack = refs[ticket]

        def put(match: re.Match, _o=original, _a=ack) -> bytes:
            value = _a if match.group(1).lower() == b"in-reply-to" else " ".join(x for x in (_o, _a) if x)
            return match.group(1) + b": " + value.encode() + b"\r\n"
        msgs[i] = (sender, _PEER_REF.sub(put, head) + body)
        rethreaded += 1
    return replies, rethreaded


def peer_venv(option: str | None, peer: Path) -> Path | None:
    """--peer-venv, else ours (.peer/venv, made by bench/setup_peer.sh), else the peer folder's own."""
    candidates = [Path(option)] if option else [OUR_VENV, peer / ".peer-helpdesk" / "venv"]
    return next((c.resolve() for c in candidates if (c / "bin" / "python").exists()), None)


def run_peer(peer: Path, venv: Path, work: Path, n: int, seed_tickets: int) -> dict[str, Any]:
    """The peer's own bench.py, one repeat (its seed 1: the same corpus as ours), its per-run line."""
    proc = subprocess.run([system_python(), str(peer / "bench.py"), "--venv", str(venv), "--work", str(work),
                           "--n", str(n), "--repeat", "1", "--seed-tickets", str(seed_tickets)],
                          cwd=work.parent, capture_output=True, text=True,
                          env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"))
    if proc.returncode != 0:
        return {"error": f"peer bench.py exited {proc.returncode}: {proc.stderr.strip()[-800:]}"}
    for line in proc.stdout.splitlines():
        if line.startswith("{") and '"msgs_per_s"' in line:
            return json.loads(line)
    return {"error": f"no run line in the peer's output: {proc.stdout[-800:]}"}
