"""What every route depends on, as named `Annotated` aliases: the runtime of this app, the calling
account, the base URL for absolute links, and a JSON object body. Routes import from here, never
from each other or from the app module."""

from __future__ import annotations

import json
import re
from typing import Annotated, Any

from fastapi import Depends, Request
from starlette.exceptions import HTTPException as StarletteHTTPException

from router.ratelimit import bucket_for
from router.runtime import Runtime
from router.sessions import COOKIE, CSRF_HEADER
from vendo_core.errors import Forbidden, InvalidRequest, Unauthenticated, UnsupportedMediaType
from vendo_core.records import Account

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")

# application/json and any +json type, with parameters (charset); nothing else is a JSON body
_JSON_TYPE = re.compile(r"^\s*application/([\w.+-]+\+)?json\s*(;.*)?$", re.IGNORECASE)


async def runtime(request: Request) -> Runtime:
    # async on purpose: FastAPI runs a sync dependency in a thread pool, on every request
    return request.app.state.runtime


async def current_account(request: Request) -> Account:
    auth = request.headers.get("authorization", "")
    if not auth and (sid := request.cookies.get(COOKIE)):
        return await _session_account(request, sid, required=True)
    scheme, _, token = auth.partition(" ")
    if scheme.lower() not in ("bearer", "token") or not token.strip():
        raise Unauthenticated()
    rt: Runtime = request.app.state.runtime
    acct = await rt.account_for(token.strip())
    if acct is None:
        raise Unauthenticated()
    await rt.limiter.hit(token.strip(), bucket_for(request.method, request.url.path))  # one round trip
    return acct


async def _session_account(request: Request, sid: str, *, required: bool) -> Account | None:
    """The account of the web session the cookie names (the browser's way in: EventSource cannot
    send a bearer header). A request that changes something must carry the session's CSRF secret
    in a header, which another site's page cannot read or set. Predictions it creates are `web`."""
    rt: Runtime = request.app.state.runtime
    session = await rt.sessions.get(sid) if rt.sessions is not None else None
    if session is None:
        if required:
            raise Unauthenticated()
        return None
    if request.method not in SAFE_METHODS and not session.csrf_ok(request.headers.get(CSRF_HEADER)):
        raise Forbidden("This request came from a page without the session's CSRF token (send it as "
                        "X-CSRF-Token)")
    await rt.limiter.hit(f"session:{session.account.username}", bucket_for(request.method, request.url.path))
    request.state.source = "web"
    request.state.session = session
    return session.account


async def optional_account(request: Request) -> Account | None:
    """The caller, or None when the request carries no Authorization header (a wrong token is
    still a 401) and no live session: for what may be read without a token, such as a shared
    prediction."""
    if not request.headers.get("authorization"):
        sid = request.cookies.get(COOKIE)
        return await _session_account(request, sid, required=False) if sid else None
    return await current_account(request)


async def admin_account(request: Request) -> Account:
    """The caller, if an admin; to anyone else the admin API does not exist (404, as for any
    unknown path, so it does not say what is there)."""
    acct = await current_account(request)
    if not acct.has("admin"):
        raise StarletteHTTPException(404, "Not Found")
    return acct


def base_url(request: Request) -> str:
    """The base of absolute links: `VENDO_PUBLIC_URL`, else the request's own."""
    public = request.app.state.runtime.settings.public_url
    return (public or str(request.base_url)).rstrip("/")


async def json_body(request: Request) -> dict[str, Any]:
    """The body as a JSON object (an empty body is `{}`); `input`, when present, an object.
    415 for a body declared as anything but JSON; 422 for JSON that is not valid, nested deeper
    than Python parses, or holds a lone UTF-16 surrogate (it could never be stored as UTF-8)."""
    ctype = request.headers.get("content-type")
    if ctype is not None and not _JSON_TYPE.match(ctype):
        raise UnsupportedMediaType(ctype)
    raw = await request.body()
    try:
        body = json.loads(raw or b"{}")
    except (ValueError, RecursionError) as e:
        reason = "nested too deeply" if isinstance(e, RecursionError) else f"not valid JSON: {e}"
        raise InvalidRequest("body", reason) from None
    if b"\\u" in raw:  # an escape may be a lone surrogate: check only then
        try:
            json.dumps(body, ensure_ascii=False).encode()
        except UnicodeEncodeError:
            raise InvalidRequest("body", "holds a lone UTF-16 surrogate (\\ud800-\\udfff)") from None
    if not isinstance(body, dict):
        raise InvalidRequest("body", "must be a JSON object")
    if "input" in body and not isinstance(body["input"], dict):
        raise InvalidRequest("input", "must be an object")
    return body


Rt = Annotated[Runtime, Depends(runtime)]
CurrentAccount = Annotated[Account, Depends(current_account)]
AdminAccount = Annotated[Account, Depends(admin_account)]
MaybeAccount = Annotated[Account | None, Depends(optional_account)]
