"""Rewrite the README's settings table from :meth:`Settings.documented` (``make settings-table``)."""
from __future__ import annotations

import sys
from pathlib import Path

from handlers.settings import Settings

README = Path(__file__).resolve().parent.parent / "README.md"
HEADER = "| variable | default | meaning |"


def table(existing: str = "") -> str:
    """The table; a default cell written by hand ("generated on first run") is kept."""
    kept = {}
    for line in existing.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`"):
            kept[cells[0].strip("`")] = cells[1]
    rows = [HEADER, "|---|---|---|"]
    for _field, env, default, doc in Settings.documented():
        shown = "unset" if default is None else "none" if default == "" else f"`{default}`"
        if env in kept and (default is None or default == "" or f"{default}" in kept[env]):
            shown = kept[env]
        rows.append(f"| `{env}` | {shown} | {doc} |")
    return "\n".join(rows) + "\n"


def main() -> int:
    text = README.read_text()
    start = text.index(HEADER)
    end = text.index("\n\n", start) + 1
    README.write_text(text[:start] + table(text[start:end]) + text[end:])
    return 0


if __name__ == "__main__":
    sys.exit(main())
