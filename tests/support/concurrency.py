"""Running the same work in several threads released at the same instant."""
from __future__ import annotations

import threading
from typing import Callable


def at_once(work: Callable[[], object], n: int = 2) -> list[BaseException]:
    """Run ``work`` in ``n`` threads that start together; returns what any of them raised."""
    barrier, errors = threading.Barrier(n), []

    def worker() -> None:
        try:
            barrier.wait()
            work()
        except Exception as exc:  # noqa: BLE001 - the caller asserts on them
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors
