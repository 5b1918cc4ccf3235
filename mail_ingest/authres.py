"""Authentication-Results (RFC 8601) from a receiving server we trust.

Anyone can write an Authentication-Results header into a message; only the one our own
receiving server added means anything. It is the topmost field whose authserv-id is listed in
``RENEWDESK_TRUSTED_AUTHSERV_IDS`` (servers put theirs on top, and a well-configured one removes
forged copies carrying its own id). From it we keep the dmarc, dkim, spf and arc results.
"""
from __future__ import annotations

import re
from typing import Iterable

_COMMENT = re.compile(r"\([^()]*\)")
_RESULT = re.compile(r"^\s*(dmarc|dkim|spf|arc)\s*=\s*([a-z]+)", re.I)
_RANK = {"pass": 0, "neutral": 2, "none": 3, "policy": 2, "softfail": 4, "fail": 5, "temperror": 1, "permerror": 1}


def trusted_ids(setting: str) -> tuple[str, ...]:
    return tuple(x.strip().lower() for x in (setting or "").split(",") if x.strip())


def results(fields: Iterable[str], trusted: tuple[str, ...]) -> dict[str, str]:
    """``{"authserv_id": ..., "dmarc": "pass", "dkim": "pass", ...}`` from the first trusted field,
    or ``{}`` when no field comes from a trusted server."""
    if not trusted:
        return {}
    for value in fields:
        text = _COMMENT.sub(" ", value or "")
        head, _, rest = text.partition(";")
        words = head.split()
        if not words or words[0].lower() not in trusted:
            continue
        found: dict[str, str] = {"authserv_id": words[0].lower()}
        for clause in rest.split(";"):
            match = _RESULT.match(clause)
            if match is None:
                continue
            method, result = match.group(1).lower(), match.group(2).lower()
            # several DKIM signatures: the best result counts (one valid signature is enough)
            if method not in found or _RANK.get(result, 9) < _RANK.get(found[method], 9):
                found[method] = result
        return found
    return {}
