"""Accounts, organizations and API tokens, as an admin manages them: the one service behind the
admin API (`/v1/admin/…`) and the `vendo accounts|orgs|tokens` commands (which call that API).
Who may call it is the route's business (admins only; a 404 to everyone else)."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from vendo_core.billing import Usage, UsageRow, nanos_of_usd, period_start
from vendo_core.errors import Conflict, InvalidRequest, NotFound
from vendo_core.records import Account, Token, check_roles
from vendo_core.registry import UNSET, Registry

KINDS = ("user", "organization")
USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,38}$")


class AccountService:
    def __init__(self, registry: Registry, *, default_limit_nanos: int | None = None, usage: Usage | None = None):
        self.registry = registry
        self.default_limit_nanos = default_limit_nanos
        self.usage = usage

    async def usage_of(self, viewer: Account, username: str | None, since: str | None, by: str,
                       now_ts: float) -> tuple[Account, dt.date, list[UsageRow]]:
        """An account's usage from `since` (a date; default: the start of the current billing
        period) to now, by model, hardware or day. Your own; an admin's, anyone's (404 otherwise)."""
        username = username or viewer.username
        if username != viewer.username and not viewer.has("admin"):
            raise NotFound("Account", username)
        acct = await self.get(username)
        if self.usage is None:
            raise NotFound("Usage", username)
        if since is None:
            start = period_start(now_ts, self.usage.period)
        else:
            try:
                start = dt.date.fromisoformat(since[:10])
            except ValueError:
                raise InvalidRequest("since", "must be a date, e.g. 2026-11-01") from None
        return acct, start, await self.usage.rows(username, start, now_ts, by)

    async def create(self, username: str, kind: str = "user", name: str | None = None,
                     roles: list[str] | None = None, limit_usd: Any = None) -> tuple[Account, str]:
        """A new account (user or organization) and its first token, in the clear (shown once).
        409 when the name is taken."""
        if not USERNAME.match(username):
            raise InvalidRequest("username", "must be 1-39 letters, digits, '-' or '_', starting with a "
                                 "letter or digit")
        if kind not in KINDS:
            raise InvalidRequest("type", f"must be one of {list(KINDS)}")
        check_roles(roles or [])
        if await self.registry.get_account(username) is not None:
            raise Conflict(f"account {username!r} already exists")
        limit = nanos_of_usd(limit_usd) if limit_usd is not None else self.default_limit_nanos
        token = await self.registry.create_account(username, name=name, kind=kind, roles=tuple(roles or ()),
                                                   token_name="first token")
        if limit is not None:
            return await self.registry.update_account(username, limit_nanos=limit), token
        return await self.get(username), token

    async def get(self, username: str) -> Account:
        acct = await self.registry.get_account(username)
        if acct is None:
            raise NotFound("Account", username)
        return acct

    async def list(self) -> list[Account]:
        return await self.registry.list_accounts()

    async def members(self, acct: Account) -> list[str] | None:
        return await self.registry.members(acct.username) if acct.type == "organization" else None

    async def update(self, username: str, *, roles: list[str] | None = None, disabled: bool | None = None,
                     limit_usd: Any = UNSET) -> Account:
        """Replace an account's roles, its spend limit (None: no limit) and/or disable (enable) it;
        a disabled account's tokens stop working at once on every router, its data stays."""
        limit = limit_usd if limit_usd is UNSET or limit_usd is None else nanos_of_usd(limit_usd)
        return await self.registry.update_account(username, roles=roles, disabled=disabled, limit_nanos=limit)

    async def set_member(self, org: str, username: str, member: bool) -> list[str]:
        return await self.registry.set_membership(org, username, member)

    # tokens

    async def create_token(self, username: str, name: str | None = None,
                           expires_at: str | None = None) -> tuple[Token, str]:
        await self.get(username)
        return await self.registry.create_token(username, name=name, expires_at=expires_at)

    async def tokens(self, username: str | None = None) -> list[Token]:
        if username is not None:
            await self.get(username)
        return await self.registry.list_tokens(username)

    async def rotate_tokens(self, username: str) -> str:
        """Revoke every token of the account and return its one new token (shown once)."""
        return await self.registry.rotate_tokens(username)

    async def revoke_token(self, tid: str, *, owner: str | None = None) -> Token:
        """Revoke token `tid`; with `owner`, only one of that account's (any other is a 404)."""
        if owner is not None and tid not in {t.id for t in await self.registry.list_tokens(owner)}:
            raise NotFound("Token", tid)
        rec = await self.registry.revoke_token_id(tid)
        if rec is None:
            raise NotFound("Token", tid)
        return rec
