"""Web sessions: a random cookie value whose sha256 keys a Redis hash holding the digest of the
API token it was opened with and a CSRF secret. The token itself is never stored. A session acts
only while its token does: revoking the token, or disabling the account, ends it at once (each
request resolves the account from the token digest, as the API resolves a bearer token)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from vendo_core.keys import Keys
from vendo_core.records import Account
from vendo_core.registry import Registry, token_digest

COOKIE = "vendo_session"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"


@dataclass
class Session:
    account: Account
    csrf: str

    def csrf_ok(self, value: str | None) -> bool:
        return bool(value) and hmac.compare_digest(self.csrf.encode(), value.encode("utf-8", "replace"))


def _key(keys: Keys, sid: str) -> str:
    return keys.session(hashlib.sha256(sid.encode("utf-8", "replace")).hexdigest())


class Sessions:
    def __init__(self, redis, keys: Keys, registry: Registry, ttl_s: int):
        self.redis = redis
        self.keys = keys
        self.registry = registry
        self.ttl_s = ttl_s

    async def open(self, token: str) -> tuple[str, Session] | None:
        """A new session for `token`'s account; None for a token that acts for nobody."""
        digest = token_digest(token)
        account = await self.registry.account_for_digest(digest)
        if account is None:
            return None
        sid, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        key = _key(self.keys, sid)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping={"token": digest, "csrf": csrf, "username": account.username})
            pipe.expire(key, self.ttl_s)
            await pipe.execute()
        return sid, Session(account, csrf)

    async def get(self, sid: str | None) -> Session | None:
        """The live session `sid` names, or None (unknown, expired, or its token no longer acts)."""
        if not sid or len(sid) > 100:
            return None
        found = await self.redis.hmget(_key(self.keys, sid), "token", "csrf")
        digest, csrf = found
        if not digest or not csrf:
            return None
        account = await self.registry.account_for_digest(digest)
        return Session(account, csrf) if account else None

    async def close(self, sid: str | None) -> None:
        if sid and len(sid) <= 100:
            await self.redis.delete(_key(self.keys, sid))
