"""The HTTP side: `/healthz`, the renewal pages and the Slack endpoint `POST /slack/events`."""
from __future__ import annotations

import logging
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from handlers.status import safe_report

log = logging.getLogger("renewdesk.web")


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
    return Starlette(routes=[Route("/healthz", healthz), Route("/", index),
                             Route("/slack/events", slack_endpoint(services), methods=["POST"]),
                             *web_renewals.routes(services)])


def slack_endpoint(services: Any) -> Any:
    """Slack's commands, events and interactivity; 503 with the reason when Slack is not configured.

    Each request's signature and timestamp are checked, and a replay refused, before slack-bolt
    sees it (:mod:`bot.signed`); bolt checks the signature again. Its dispatch blocks until the
    listener acknowledges, so it runs in a worker thread, never on the event loop.
    """
    from bot import build_app, http_enabled
    from bot.signed import SignedRequests

    if not http_enabled(services.settings):
        async def off(request: Request) -> JSONResponse:
            return JSONResponse({"error": "Slack is not configured: set SLACK_BOT_TOKEN and SLACK_SIGNING_SECRET"},
                                status_code=503)
        return off

    from slack_bolt.adapter.starlette.handler import to_bolt_request, to_starlette_response
    app = build_app(services)
    signed = SignedRequests(services.settings.slack_signing_secret)

    async def events(request: Request) -> Any:
        body = await request.body()
        refused = signed.refusal(body, request.headers.get("x-slack-request-timestamp"),
                                 request.headers.get("x-slack-signature"))
        if refused:
            log.warning("slack: refused a request from %s: %s", request.client.host if request.client else "?", refused)
            return JSONResponse({"error": refused}, status_code=401)
        bolt_request = to_bolt_request(request, body)
        return to_starlette_response(await _in_thread(app.dispatch, bolt_request))
    return events


async def _in_thread(fn: Any, *args: Any) -> Any:
    from starlette.concurrency import run_in_threadpool
    return await run_in_threadpool(fn, *args)
