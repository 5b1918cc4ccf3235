"""Run every benchmark script in bench/ and print each one's figures (`make bench`)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    failed = 0
    for script in sorted(HERE.glob("*.py")):
        if script.name.startswith("_") or script.name == "run_all.py":  # helpers, not benchmarks
            continue
        print(f"== {script.stem}", flush=True)
        failed += subprocess.run([sys.executable, "-m", f"bench.{script.stem}"], cwd=HERE.parent).returncode != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
