"""Run every benchmark script in bench/ and write the figures into docs/benchmarks.md (`make bench`).

    python -m bench.run_all [--quick] [--only accept,sweep] [--doc docs/benchmarks.md]
                            [--save build/bench-last.jsonl] [--from RUN.jsonl] [--timeout S]

Each script runs as its own process; what it prints goes through to this terminal, and its JSON
lines are kept (in --save) and handed to bench/report.py, which writes the generated section of
--doc: the machine, the date, and each figure next to its target and what it was compared with
in the same run. --quick runs every script with a small N (about two minutes in all): it proves
the whole chain works, its figures are not the ones of record. --from rewrites the document
from a saved run without measuring anything.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench import report

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
NOT_BENCHMARKS = {"run_all", "report"}
# small but real: every script still goes through the whole of what it measures
QUICK_ARGS = {
    "accept": ["--n", "200", "--repeat", "1"],
    "ingest": ["--n", "100", "--seed-tickets", "20"],
    "memory": ["--minutes", "0.5"],  # the big message stays 25 MB: smaller ones carry more fixed overhead
    "outbox_delivery": ["--n", "300"],
    "parse": ["--n", "200", "--repeat", "1"],
    "slack": ["--n", "5", "--rounds", "2"],
    "sweep": ["--sizes", "2000,20000", "--due", "100", "--big-due", "1000"],
}


def scripts() -> list[str]:
    return sorted(p.stem for p in HERE.glob("*.py") if not p.name.startswith("_") and p.stem not in NOT_BENCHMARKS)


def run_one(name: str, extra: list[str], timeout: float | None) -> dict[str, Any]:
    """Run bench.<name>, echo its output, keep the JSON objects it printed on stdout."""
    print(f"== bench.{name} {' '.join(extra)}".rstrip(), flush=True)
    lines: list[dict[str, Any]] = []
    proc = subprocess.Popen([sys.executable, "-m", f"bench.{name}", *extra], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    try:
        for raw in proc.stdout:  # type: ignore[union-attr]
            sys.stdout.write(raw)
            sys.stdout.flush()
            if raw.lstrip().startswith("{"):
                try:
                    lines.append(json.loads(raw))
                except json.JSONDecodeError:
                    pass
        rc = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        rc = proc.wait()
        print(f"bench.{name}: stopped after {timeout:.0f} s", file=sys.stderr)
    return {"rc": rc, "lines": lines}


def save(path: Path, meta: dict[str, Any], results: dict[str, dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        f.write(json.dumps({"run": meta}) + "\n")
        for name, got in results.items():
            f.write(json.dumps({"script": name, "rc": got["rc"]}) + "\n")
            for line in got["lines"]:
                f.write(json.dumps({"script": name, "line": line}) + "\n")


def load(path: Path) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    meta: dict[str, Any] = {}
    results: dict[str, dict[str, Any]] = {}
    for raw in path.read_text().splitlines():
        obj = json.loads(raw)
        if "run" in obj:
            meta = obj["run"]
        elif "line" in obj:
            results.setdefault(obj["script"], {"rc": 0, "lines": []})["lines"].append(obj["line"])
        else:
            results.setdefault(obj["script"], {"rc": 0, "lines": []})["rc"] = obj["rc"]
    return meta, results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small N everywhere: checks the chain, not figures of record")
    ap.add_argument("--only", help="comma-separated scripts (default: all of " + ", ".join(scripts()) + ")")
    ap.add_argument("--doc", default=str(ROOT / "docs" / "benchmarks.md"),
                    help="the document to write the figures into")
    ap.add_argument("--save", default=str(ROOT / "build" / "bench-last.jsonl"),
                    help="where to keep the run's JSON lines")
    ap.add_argument("--from", dest="source", help="write the document from a saved run instead of running anything")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds each script may take")
    args = ap.parse_args(argv)
    if args.source:
        meta, results = load(Path(args.source))
    else:
        chosen = args.only.split(",") if args.only else scripts()
        unknown = set(chosen) - set(scripts())
        if unknown:
            ap.error(f"no such benchmark: {', '.join(sorted(unknown))}")
        meta = {"when": report.now().isoformat(), "quick": args.quick, "machine": report.machine(),
                "command": "python -m bench.run_all " + shlex.join(argv if argv is not None else sys.argv[1:])}
        results = {name: run_one(name, QUICK_ARGS.get(name, []) if args.quick else [], args.timeout)
                   for name in chosen}
        save(Path(args.save), meta, results)
    rows = report.figures(results)
    when = dt.datetime.fromisoformat(meta["when"]) if meta.get("when") else report.now()
    section = report.render(rows, meta.get("machine") or report.machine(), when=when, quick=bool(meta.get("quick")),
                            command=meta.get("command", "python -m bench.run_all").strip())
    report.write(Path(args.doc), section)
    print(f"== {sum(r.verdict == 'met' for r in rows)} of {len(rows)} targets met; figures written to {args.doc}")
    for r in rows:
        print(f"   {r.verdict:13} {r.target.figure}: {r.value if r.value is not None else r.why}")
    failed = [name for name, got in results.items() if got["rc"]]
    if failed:
        print(f"== scripts that failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
