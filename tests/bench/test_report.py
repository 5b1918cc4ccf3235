"""The benchmark report: real JSON lines from the bench scripts become the figures table of the docs.

The scripts run here with tiny sizes (seconds); their figures are whatever this machine gives,
so each test works out the expected verdict from the figure the script itself printed.
"""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench import report, run_all

ROOT = Path(__file__).resolve().parents[2]
HAND_WRITTEN = "# Benchmarks\n\nWhat each script does, written by hand.\n"
AFTER = "\n## Notes kept after the figures\n"


SCRIPTS = {"outbox_delivery": ["--n", "30"], "sweep": ["--sizes", "300,600", "--due", "5", "--big-due", "20"]}


@pytest.fixture(scope="module")
def results() -> dict:
    """Both scripts at once (their time is mostly spent waiting for the disk), their JSON lines parsed."""
    procs = {name: subprocess.Popen([sys.executable, "-m", f"bench.{name}", *args], cwd=ROOT, text=True,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE) for name, args in SCRIPTS.items()}
    out = {}
    for name, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0, stderr
        out[name] = {"rc": 0, "lines": [json.loads(ln) for ln in stdout.splitlines() if ln.startswith("{")]}
    return out


def _table_row(doc: str, figure: str) -> list[str]:
    [line] = [ln for ln in doc.splitlines() if ln.startswith(f"| {figure} ")]
    return [cell.strip() for cell in line.strip("|").split(" | ")]


def test_real_output_becomes_rows_with_verdicts_from_the_figures(results, tmp_path):
    """Each measured figure lands in the table beside its target; met/not met follows the figure printed."""
    assert all(r["rc"] == 0 and r["lines"] for r in results.values()), results
    doc = tmp_path / "benchmarks.md"
    doc.write_text(HAND_WRITTEN + "\n" + report.BEGIN + "\nold figures\n" + report.END + "\n" + AFTER)
    rows = report.figures(results)
    report.write(doc, report.render(rows, report.machine(), when=report.now(), quick=True, command="test"))
    text = doc.read_text()

    assert text.startswith(HAND_WRITTEN) and text.rstrip().endswith(AFTER.strip()) and "old figures" not in text
    outbox = next(ln for ln in results["outbox_delivery"]["lines"])["deliver_per_second"]
    row = _table_row(text, "outbox delivery to a loopback SMTP sink (`bench.outbox_delivery`)")
    assert row[1] == f"{report._num(outbox)} mails/s" and row[2] == ">= 300 mails/s"
    assert row[4] == ("**met**" if outbox >= 300 else "**not met**")

    sweep = results["sweep"]["lines"]
    ratio = next(ln["ratio_largest_to_smallest"] for ln in sweep if "ratio_largest_to_smallest" in ln)
    big = next(ln["seconds"] for ln in sweep if "target_seconds" in ln)
    row = _table_row(text, "daily sweeps (every kind), largest / smallest database (`bench.sweep`)")
    assert row[1] == f"{report._num(ratio)} x" and row[4] == ("**met**" if ratio <= 2 else "**not met**")
    assert "300 services" in row[3] and "600 services" in row[3]
    row = _table_row(text, "daily sweeps (every kind) with 1% of the services due (`bench.sweep`)")
    assert row[4] == ("**met**" if big <= 5 else "**not met**")

    # what was not run says so instead of showing a number
    row = _table_row(text, "Slack /desk acknowledgement p99 (`bench.slack`)")
    assert row[1] == "-" and row[4] == "not measured: not run"
    for key in ("CPU", "cores", "RAM", "OS", "Python", "SQLite", "PostgreSQL"):
        assert f"- {key}: " in text
    met = sum(r.verdict == "met" for r in rows)
    assert f"{met} of {len(report.TARGETS)} targets met." in text


def test_a_failed_script_and_a_missing_peer_are_not_measured(results):
    """A script that exited non-zero, or an ingest run without the peer, gives no verdict, and says why."""
    broken = {"outbox_delivery": {"rc": 1, "lines": []},
              "ingest": {"rc": 0, "lines": [{"bench": "ingest", "phase": "measured", "msgs_per_s": 12.5, "n": 40},
                                            {"bench": "ingest", "peer": "not set up"}]}}
    rows = {r.target.script: r for r in report.figures(broken)}
    assert rows["outbox_delivery"].verdict == "not measured" and "exited 1" in rows["outbox_delivery"].why
    assert rows["ingest"].verdict == "not measured" and "make peer" in rows["ingest"].why
    assert "12.5 msgs/s" in rows["ingest"].reference


def test_a_saved_run_rewrites_the_document_without_measuring(results, tmp_path):
    """run_all --from turns the JSON lines it saved into the same table, machine and date included."""
    saved = tmp_path / "run.jsonl"
    meta = {"when": "2026-01-02T03:04:00+00:00", "quick": False, "command": "python -m bench.run_all",
            "machine": {"CPU": "the machine of that run"}}
    run_all.save(saved, meta, results)
    assert run_all.load(saved) == (meta, results)
    doc = tmp_path / "b.md"
    doc.write_text(HAND_WRITTEN)
    assert run_all.main(["--from", str(saved), "--doc", str(doc)]) == 0
    text = doc.read_text()
    assert text.startswith(HAND_WRITTEN) and "Run 2026-01-02 03:04 UTC" in text
    assert "- CPU: the machine of that run" in text and "Quick run" not in text
    outbox = results["outbox_delivery"]["lines"][0]["deliver_per_second"]
    assert f"| {report._num(outbox)} mails/s |" in text
