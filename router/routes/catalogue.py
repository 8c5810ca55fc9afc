"""Model administration and the catalogue: create, delete, list and search models, delete versions,
hardware SKUs and collections."""

from __future__ import annotations

from urllib.parse import urlencode

from fastapi import APIRouter, Request, Response

from router import wire
from router.deps import CurrentAccount, Rt, base_url
from router.services.catalogue import ModelWithLatest
from vendo_core.errors import InvalidRequest

router = APIRouter(prefix="/v1", tags=["models"])


def _models(rows: list[ModelWithLatest], base: str) -> list[dict]:
    return [wire.model(m, base, latest) for m, latest in rows]


def _page(rows: list[ModelWithLatest], nxt: str | None, base: str, sort_by: str | None,
          sort_direction: str | None) -> dict:
    next_url = None
    if nxt:
        params = {k: v for k, v in (("sort_by", sort_by), ("sort_direction", sort_direction)) if v}
        next_url = f"{base}/v1/models?{urlencode({**params, 'cursor': nxt})}"
    return wire.page(_models(rows, base), next_url)


@router.post("/models", status_code=201, response_model=wire.Model)
async def create_model(body: wire.ModelCreate, request: Request, account: CurrentAccount, rt: Rt):
    """Create a model (of the caller's account) with no versions yet."""
    model, latest = await rt.catalogue.create_model(account, body)
    return wire.model(model, base_url(request), latest)


@router.delete("/models/{owner}/{name}", status_code=204)
async def delete_model(owner: str, name: str, account: CurrentAccount, rt: Rt):
    """Delete a model; only one with no versions can be deleted."""
    await rt.catalogue.delete_model(account, owner, name)
    return Response(status_code=204)


@router.get("/models", response_model=wire.Page[wire.Model])
async def list_models(request: Request, account: CurrentAccount, rt: Rt, sort_by: str | None = None,
                      sort_direction: str | None = None, cursor: str | None = None):
    """Models the caller can see (public ones and its own), 100 a page. To search them, send
    `QUERY /v1/models` with the same parameters and the query text as a `text/plain` body."""
    rows, nxt = await rt.catalogue.page(account, sort_by=sort_by, direction=sort_direction, cursor=cursor)
    return _page(rows, nxt, base_url(request), sort_by, sort_direction)


# QUERY is not an OpenAPI 3.1 method: a document listing it would not validate (GET /v1/models says it)
@router.api_route("/models", methods=["QUERY"], response_model=wire.Page[wire.Model], include_in_schema=False)
async def search_models(request: Request, account: CurrentAccount, rt: Rt, sort_by: str | None = None,
                        sort_direction: str | None = None, cursor: str | None = None):
    """Search the models the caller can see: the body is the query text (text/plain)."""
    try:
        query = (await request.body()).decode()
    except UnicodeDecodeError as e:
        raise InvalidRequest("query", "must be UTF-8 text") from e
    rows, nxt = await rt.catalogue.page(account, sort_by=sort_by, direction=sort_direction, cursor=cursor,
                                        query=query)
    return _page(rows, nxt, base_url(request), sort_by, sort_direction)


@router.delete("/models/{owner}/{name}/versions/{vid}", status_code=204)
async def delete_version(owner: str, name: str, vid: str, account: CurrentAccount, rt: Rt):
    """Delete a version; its Serve application goes once its running predictions finish."""
    await rt.catalogue.delete_version(account, owner, name, vid)
    return Response(status_code=204)


@router.get("/hardware", response_model=list[wire.Hardware])
async def list_hardware(account: CurrentAccount, rt: Rt):
    """The hardware SKUs a model, version or deployment may ask for."""
    return [wire.hardware(sku, name) for sku, name in rt.catalogue.hardware()]


@router.get("/collections", response_model=wire.Page[wire.Collection])
async def list_collections(account: CurrentAccount, rt: Rt):
    """Collections of models (without their models)."""
    return wire.page([wire.collection(c) for c in rt.catalogue.collections()])


@router.get("/collections/{slug}", response_model=wire.Collection)
async def get_collection(slug: str, request: Request, account: CurrentAccount, rt: Rt):
    """A collection with the models in it that the caller can see."""
    c, rows = await rt.catalogue.collection(account, slug)
    return wire.collection(c, _models(rows, base_url(request)))
