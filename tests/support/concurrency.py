"""Running work in several threads released at the same instant."""
from __future__ import annotations

import threading
from typing import Callable


def all_at_once(*works: Callable[[], object]) -> list[BaseException]:
    """Run each of ``works`` in a thread of its own, all starting together; returns what any raised."""
    barrier, errors = threading.Barrier(len(works)), []

    def worker(work: Callable[[], object]) -> None:
        try:
            barrier.wait()
            work()
        except Exception as exc:  # noqa: BLE001 - the caller asserts on them
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(work,)) for work in works]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def at_once(work: Callable[[], object], n: int = 2) -> list[BaseException]:
    """Run ``work`` in ``n`` threads that start together; returns what any of them raised."""
    return all_at_once(*[work] * n)
