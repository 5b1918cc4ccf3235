"""Where the real-world mail corpus is: `RENEWDESK_CORPUS`, else `shared/corpus` beside the checkout.

The corpus is other projects' test mail, kept outside this repository with its licences; the
tests that read it skip, naming the path they looked at, when it is not there.
"""
from __future__ import annotations

import os
from pathlib import Path

CORPUS = Path(os.environ.get("RENEWDESK_CORPUS") or Path(__file__).resolve().parents[3] / "shared" / "corpus")
