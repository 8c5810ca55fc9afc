"""Accounts, tokens, models and versions in Redis. Tokens are stored as sha256 digests only."""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from typing import Any

import redis.asyncio as aioredis

from router.errors import Conflict
from router.keys import Keys
from router.store import now_iso

VERSION_JSON = ("openapi_schema", "traits", "runtime_env", "config")


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return "r8_" + secrets.token_urlsafe(30)


class Registry:
    def __init__(self, redis: aioredis.Redis, keys: Keys):
        self.redis = redis
        self.keys = keys

    # accounts and tokens

    async def create_account(self, username: str, token: str | None = None, name: str | None = None,
                             kind: str = "user") -> str:
        """Create (or keep) an account and add a token to it; returns the token in the clear once."""
        token = token or new_token()
        k = self.keys
        pipe = self.redis.pipeline(transaction=True)
        pipe.hsetnx(k.account(username), "username", username)
        pipe.hsetnx(k.account(username), "type", kind)
        pipe.hsetnx(k.account(username), "name", name or username)
        pipe.hsetnx(k.account(username), "created_at", now_iso())
        pipe.sadd(k.accounts(), username)
        pipe.hset(k.token(token_digest(token)), mapping={"username": username, "created_at": now_iso()})
        await pipe.execute()
        return token

    async def account_for_token(self, token: str) -> dict[str, str] | None:
        username = await self.redis.hget(self.keys.token(token_digest(token)), "username")
        if not username:
            return None
        return await self.redis.hgetall(self.keys.account(username)) or None

    async def get_account(self, username: str) -> dict[str, str] | None:
        return await self.redis.hgetall(self.keys.account(username)) or None

    # models

    async def get_model(self, owner: str, name: str) -> dict[str, Any] | None:
        raw = await self.redis.hgetall(self.keys.model(owner, name))
        if not raw:
            return None
        raw["run_count"] = int(raw.get("run_count", 0))
        return raw

    async def ensure_model(self, owner: str, name: str, visibility: str = "private",
                           description: str | None = None, hardware: str | None = None) -> dict[str, Any]:
        key = self.keys.model(owner, name)
        created = now_iso()
        fields = {"owner": owner, "name": name, "visibility": visibility, "created_at": created,
                  "run_count": 0}
        if description:
            fields["description"] = description
        if hardware:
            fields["hardware"] = hardware
        pipe = self.redis.pipeline(transaction=True)
        for f, v in fields.items():
            pipe.hsetnx(key, f, v)
        pipe.zadd(self.keys.models(), {f"{owner}/{name}": time.time()}, nx=True)
        await pipe.execute()
        return await self.get_model(owner, name)

    async def list_models(self) -> list[dict[str, Any]]:
        refs = await self.redis.zrevrange(self.keys.models(), 0, -1)
        pipe = self.redis.pipeline(transaction=False)
        for ref in refs:
            owner, name = ref.split("/", 1)
            pipe.hgetall(self.keys.model(owner, name))
        out = []
        for raw in await pipe.execute():
            if raw:
                raw["run_count"] = int(raw.get("run_count", 0))
                out.append(raw)
        return out

    async def count_run(self, owner: str, name: str) -> None:
        await self.redis.hincrby(self.keys.model(owner, name), "run_count", 1)

    # versions

    async def add_version(self, owner: str, name: str, record: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """Register a version of `owner/name`. Returns (record, created). Re-pushing the same
        contents to the same model is a no-op; the same contents under another model is a conflict."""
        vid = record["id"]
        existing = await self.get_version(vid)
        if existing:
            if existing["model"] != f"{owner}/{name}":
                raise Conflict(f"version {vid} already belongs to {existing['model']}")
            return existing, False
        flat = {k: (json.dumps(v) if k in VERSION_JSON else v) for k, v in record.items() if v is not None}
        flat["model"] = f"{owner}/{name}"
        ts = time.time()
        flat.setdefault("created_at", now_iso(ts))
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(self.keys.version(vid), mapping=flat)
        pipe.zadd(self.keys.model_versions(owner, name), {vid: ts})
        pipe.hset(self.keys.model(owner, name), "latest_version", vid)
        await pipe.execute()
        return await self.get_version(vid), True

    async def get_version(self, vid: str) -> dict[str, Any] | None:
        raw = await self.redis.hgetall(self.keys.version(vid))
        if not raw:
            return None
        for k in VERSION_JSON:
            if k in raw:
                raw[k] = json.loads(raw[k])
        return raw

    async def list_version_ids(self, owner: str, name: str, limit: int = 100) -> list[str]:
        return await self.redis.zrevrange(self.keys.model_versions(owner, name), 0, limit - 1)

    async def all_version_ids(self) -> list[str]:
        out = []
        for m in await self.list_models():
            out += await self.redis.zrevrange(self.keys.model_versions(m["owner"], m["name"]), 0, -1)
        return out

    async def set_version_fields(self, vid: str, fields: dict[str, Any]) -> None:
        await self.redis.hset(self.keys.version(vid), mapping={k: str(v) for k, v in fields.items()})
