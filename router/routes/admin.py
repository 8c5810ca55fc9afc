"""The admin API (a vendo extension): accounts, organizations and API tokens. Admins only; to
every other caller these paths answer 404, as paths that do not exist do."""

from __future__ import annotations

from fastapi import APIRouter, Query, Response

from router import wire
from router.deps import AdminAccount, Rt
from vendo_core.billing import usd
from vendo_core.records import Account
from vendo_core.registry import UNSET

router = APIRouter(prefix="/v1/admin", tags=["admin"])


async def _account(rt: Rt, acct: Account) -> dict:
    limit = None if acct.limit_nanos is None else float(usd(acct.limit_nanos))
    return {**acct.model_dump(), "members": await rt.accounts.members(acct), "limit_usd": limit}


@router.get("/accounts", response_model=wire.AdminAccountList)
async def list_accounts(admin: AdminAccount, rt: Rt):
    """Every account, users and organizations, with roles, memberships and whether disabled."""
    return {"results": [await _account(rt, a) for a in await rt.accounts.list()]}


@router.post("/accounts", status_code=201, response_model=wire.AdminAccountCreated)
async def create_account(admin: AdminAccount, rt: Rt, body: wire.AdminAccountCreate):
    """Create a user or an organization with its first API token (shown this once)."""
    acct, token = await rt.accounts.create(body.username, body.type, body.name, body.roles, body.limit_usd)
    return {"account": await _account(rt, acct), "token": token}


@router.get("/accounts/{username}", response_model=wire.AdminAccount)
async def get_account(username: str, admin: AdminAccount, rt: Rt):
    return await _account(rt, await rt.accounts.get(username))


@router.patch("/accounts/{username}", response_model=wire.AdminAccount)
async def update_account(username: str, admin: AdminAccount, rt: Rt, body: wire.AdminAccountUpdate):
    """Replace an account's roles, or disable (enable) it: a disabled account's tokens stop working
    at once on every router replica; its models, predictions and files stay."""
    limit = body.limit_usd if "limit_usd" in body.model_fields_set else UNSET
    acct = await rt.accounts.update(username, roles=body.roles, disabled=body.disabled, limit_usd=limit)
    return await _account(rt, acct)


@router.post("/accounts/{username}/tokens/rotate", response_model=wire.AdminRotated)
async def rotate_tokens(username: str, admin: AdminAccount, rt: Rt):
    """Revoke every token of an account (at once on every router replica) and create its one new
    token, shown this once. Rotating your own account's ends the token that asked, too."""
    return {"account": username, "token": await rt.accounts.rotate_tokens(username)}


@router.put("/orgs/{org}/members/{username}", response_model=wire.AdminMembers)
async def add_member(org: str, username: str, admin: AdminAccount, rt: Rt):
    """Make a user a member of an organization: it then sees and acts on the organization's
    models, predictions and deployments with its own token."""
    return {"organization": org, "members": await rt.accounts.set_member(org, username, True)}


@router.delete("/orgs/{org}/members/{username}", response_model=wire.AdminMembers)
async def remove_member(org: str, username: str, admin: AdminAccount, rt: Rt):
    return {"organization": org, "members": await rt.accounts.set_member(org, username, False)}


@router.get("/tokens", response_model=wire.AdminTokenList)
async def list_tokens(admin: AdminAccount, rt: Rt, account: str | None = Query(None)):
    """API tokens (never the tokens themselves): id, name, prefix, created, expires, last used."""
    return {"results": [wire.admin_token(t) for t in await rt.accounts.tokens(account)]}


@router.post("/tokens", status_code=201, response_model=wire.AdminTokenCreated)
async def create_token(admin: AdminAccount, rt: Rt, body: wire.AdminTokenCreate):
    """A new API token of an account, shown this once; stored only as its sha256."""
    rec, token = await rt.accounts.create_token(body.account, body.name, body.expires_at)
    return {**wire.admin_token(rec), "token": token}


@router.delete("/tokens/{token_id}", status_code=204, response_class=Response)
async def revoke_token(token_id: str, admin: AdminAccount, rt: Rt):
    """Revoke a token: it stops working at once on every router replica."""
    await rt.accounts.revoke_token(token_id)
    return Response(status_code=204)
