"""HTTP for the renewal pages: ``/renew/<token>`` (GET shows, POST applies) and ``/renew/confirm``
(an activation code, then confirm or decline). Only adapts HTTP: the operations are in
:mod:`handlers.renewals.pages` and :mod:`handlers.renewals.confirm`."""
from __future__ import annotations

import functools
from typing import Any
from urllib.parse import parse_qs

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from handlers.errors import TemporaryFailure
from handlers.outbox import our_address
from handlers.render import render_web
from handlers.renewals import confirm, pages

COOKIE = "rd_form"
MAX_FORM_BYTES = 64 * 1024
STATUS = {"ok": 200, "ask": 200, "applied": 200, "invalid": 400, "malformed": 400, "unknown": 404, "expired": 410,
          "used": 410, "locked": 423}
HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",            # the token is in the URL: never hand it to another site
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
                               "frame-ancestors 'none'",
}


async def read_form(request: Request) -> dict[str, str] | None:
    """An urlencoded body as {name: last value}; None when it is too large or not a form."""
    if "application/x-www-form-urlencoded" not in request.headers.get("content-type", ""):
        return None
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return None
    try:
        return {k: v[-1] for k, v in parse_qs(body.decode("utf-8"), keep_blank_values=True).items()}
    except UnicodeDecodeError:
        return None


def page(services: Any, name: str, context: dict[str, Any], status: int, nonce: str | None = None) -> HTMLResponse:
    response = HTMLResponse(render_web(services.settings, name, context), status_code=status, headers=HEADERS)
    if nonce:
        response.set_cookie(COOKIE, nonce, httponly=True, samesite="strict", path="/renew",
                            secure=services.settings.public_url.startswith("https:"))
    return response


def routes(services: Any) -> list[Route]:
    run = functools.partial(run_in_threadpool, services.run)

    def refusal(title: str, text: str, status: int) -> HTMLResponse:
        return page(services, "message", {"title": title, "text": text,
                                          "support_address": our_address(services.settings)}, status)

    async def checked_form(request: Request, again: str) -> tuple[dict[str, str], Response | None]:
        """The posted form, or the page refusing it: not a form, or its CSRF token does not check."""
        form = await read_form(request)
        if form is None:
            return {}, refusal("Not a renewal form", "The request was not a form we sent.", 400)
        if not pages.form_token_ok(services, request.cookies.get(COOKIE), form.get("csrf")):
            return form, refusal("Please reload the page", "This form could not be checked (it is old, or was "
                                 f"sent from another site). Nothing was changed: reload the page and {again}.", 403)
        return form, None

    async def renew(request: Request) -> Response:
        token = request.path_params["token"]
        nonce = request.cookies.get(COOKIE) or pages.new_nonce()
        try:
            if request.method == "POST":
                form, refused = await checked_form(request, "choose again")
                if refused is not None:
                    return refused
                result = await run(pages.submit_page, token, form, actor="web:renewal-page")
            else:
                result = await run(pages.show_page, token, actor="web:renewal-page", readonly=True)
        except TemporaryFailure:
            return refusal("Please try again in a moment", "We cannot reach our records right now. Nothing was "
                           "changed.", 503)
        if result.status in ("unknown", "expired"):
            return page(services, "renew_invalid", {"status": result.status,
                                                    "support_address": our_address(services.settings)},
                        STATUS[result.status])
        return page(services, "renew", {"page": result, "csrf": pages.form_token(services, nonce),
                                        "action": request.url.path}, STATUS[result.status], nonce)

    async def confirm_code(request: Request) -> Response:
        nonce = request.cookies.get(COOKIE) or pages.new_nonce()
        result = confirm.ConfirmResult("ask")
        try:
            if request.method == "POST":
                form, refused = await checked_form(request, "enter the code again")
                if refused is not None:
                    return refused
                code = form.get("code", "")
                if form.get("step") == "decide":
                    result = await run(confirm.decide, code, form, actor="web:renewal-confirm")
                else:
                    result = await run(confirm.check, code, actor="web:renewal-confirm")
        except TemporaryFailure:
            return refusal("Please try again in a moment", "We cannot reach our records right now. Nothing was "
                           "changed.", 503)
        return page(services, "renew_confirm", {"result": result, "csrf": pages.form_token(services, nonce)},
                    STATUS.get(result.status, 400), nonce)

    # /renew/confirm first: it would otherwise be taken for a token
    return [Route("/renew/confirm", confirm_code, methods=["GET", "POST"]),
            Route("/renew/{token}", renew, methods=["GET", "POST"])]
