"""Parse speed: :func:`mail_ingest.parse.parse` over generated client mail and the ruby-mail corpus.

    python -m bench.parse [--n 2000] [--repeat 3]

The generated corpus is N messages from ../shared/peers/django-helpdesk/gen_emails.py (run with
the system python, seed 1), read into memory before timing. Each corpus is parsed `--repeat`
times; the best pass counts (the least disturbed by the machine). The first pass is preceded by
one warm-up parse per corpus, so lazy imports (the charset detector) are not counted.

Prints one JSON line: messages per second, microseconds per message and MB/s for each corpus, and
for comparison the microseconds the stdlib parser alone (compat32, which parse() runs once) takes.
"""
from __future__ import annotations

import argparse
import email
import json
import shutil
import subprocess
import sys
import tempfile
import time
from email.policy import compat32
from pathlib import Path

from mail_ingest.parse import parse

ROOT = Path(__file__).resolve().parent.parent
GENERATOR = ROOT.parent / "shared" / "peers" / "django-helpdesk" / "gen_emails.py"
RUBY_MAIL = ROOT.parent / "shared" / "corpus" / "ruby-mail"


def generated(n: int) -> list[bytes]:
    if not GENERATOR.is_file():
        sys.exit(f"bench.parse: the email generator is missing: {GENERATOR}")
    python = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else (shutil.which("python3") or sys.executable)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([python, str(GENERATOR), "--out", tmp, "--count", str(n), "--seed", "1"],
                       check=True, stdout=subprocess.DEVNULL)
        return [p.read_bytes() for p in sorted(Path(tmp).glob("*.eml"))]


def ruby_mail() -> list[bytes]:
    return [p.read_bytes() for p in sorted(RUBY_MAIL.rglob("*.eml")) if p.is_file()]


def measure(messages: list[bytes], repeat: int) -> dict:
    if not messages:
        return {"messages": 0}
    parse(messages[0])
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for raw in messages:
            parse(raw)
        best = min(best, time.perf_counter() - start)
    baseline = float("inf")  # the stdlib parse alone, which parse() runs once per message
    for _ in range(repeat):
        start = time.perf_counter()
        for raw in messages:
            email.message_from_bytes(raw, policy=compat32)
        baseline = min(baseline, time.perf_counter() - start)
    size = sum(len(m) for m in messages)
    return {"messages": len(messages), "bytes": size, "seconds": round(best, 4),
            "msg_per_s": round(len(messages) / best, 1), "us_per_msg": round(best / len(messages) * 1e6, 1),
            "mb_per_s": round(size / best / 1e6, 2),
            "stdlib_parse_us_per_msg": round(baseline / len(messages) * 1e6, 1)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="generated messages (default 2000)")
    parser.add_argument("--repeat", type=int, default=3, help="passes per corpus; the best counts (default 3)")
    args = parser.parse_args(argv)
    result = {"bench": "parse", "python": sys.version.split()[0],
              "generated": measure(generated(args.n), args.repeat),
              "ruby_mail": measure(ruby_mail(), args.repeat)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
