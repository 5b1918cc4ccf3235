"""The HTTP side: `/healthz` and the renewal pages; the Slack endpoint plugs in here."""
from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from handlers.status import safe_report


def build_web_app(services: Any, *, in_process_scheduler: Any = None) -> Starlette:
    """The ASGI app; ``in_process_scheduler`` is the scheduler when `run` hosts one beside it."""

    async def healthz(request: Request) -> JSONResponse:
        # 200 while the database answers; the body says how the inbox and scheduler are doing
        ok, data = await _in_thread(safe_report, services)
        if ok and in_process_scheduler is not None:
            data["scheduler"]["running_here"] = bool(in_process_scheduler.running)
        data["status"] = "ok" if ok else "database unavailable"
        return JSONResponse(data, status_code=200 if ok else 503)

    async def index(request: Request) -> PlainTextResponse:
        return PlainTextResponse(f"renewdesk for {services.settings.business_name}: see /healthz\n")

    from renewdesk import web_renewals
    return Starlette(routes=[Route("/healthz", healthz), Route("/", index), *web_renewals.routes(services)])


async def _in_thread(fn: Any, *args: Any) -> Any:
    from starlette.concurrency import run_in_threadpool
    return await run_in_threadpool(fn, *args)
