"""Accounts, tokens, models and versions in Redis. Tokens are stored as sha256 digests only."""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from datetime import datetime, timezone
from typing import Any, Callable

import redis.asyncio as aioredis

from vendo_core import metrics
from vendo_core.errors import Conflict, InvalidRequest, NotFound
from vendo_core.keys import Keys
from vendo_core.records import Account, Model, Token, Version, check_roles, encode_fields
from vendo_core.redislock import RedisLock
from vendo_core.store import now_iso, parse_iso

UNSET: Any = object()  # an update's "leave this field as it is", where None means "remove it"
MODEL_CREATED, LATEST_VERSION_CREATED = "model_created_at", "latest_version_created_at"
SORT_KEYS = (MODEL_CREATED, LATEST_VERSION_CREATED)
REPLICA_STARTS_KEPT_S = 86400.0
UNVERSIONED_OFFSET_S = 1e10  # models with no version sort below every versioned one, by creation


def _unversioned(created_ts: float) -> float:
    return created_ts - UNVERSIONED_OFFSET_S


def _created_ts(model: Model) -> float:
    return model.created_ts if model.created_ts is not None else parse_iso(model.created_at)


def _model(raw: dict[str, str]) -> Model | None:
    """A model record, or None for a missing (or only partly written) hash."""
    return Model.from_redis(raw) if raw and "owner" in raw else None


def _version(raw: dict[str, str]) -> Version | None:
    """A version record, or None for a missing one (or the setup fields a deleted version's late
    replica wrote)."""
    return Version.from_redis(raw) if raw and "model" in raw else None


def visible(model: Model | None, account: Account) -> bool:
    """Whether `account` may see `model`: a public one, or its own. Everything else is a 404."""
    return model is not None and model.visible_to(account)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return "r8_" + secrets.token_urlsafe(30)


# a token's owner and expiry, noting its use (only on a token that exists: a revoked one stays gone)
_USE_TOKEN = """
local found = redis.call('HMGET', KEYS[1], 'username', 'expires_at')
if found[1] then redis.call('HSET', KEYS[1], 'last_used_at', ARGV[1]) end
return found
"""


def _canonical_time(field: str, value: str) -> str:
    """Any ISO 8601 date-time (a zone-less one is UTC), in the form every record uses."""
    try:
        when = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        raise InvalidRequest(field, "must be an ISO 8601 date-time, e.g. 2027-01-31T00:00:00Z") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def token_id(digest: str) -> str:
    """A token's public name, derived from its digest (so a client holding the token knows it)."""
    return "tok_" + digest[:16]


def _legacy_token(digest: str, raw: dict[str, str]) -> Token:
    return Token(id=token_id(digest), username=raw["username"], created_at=raw.get("created_at"),
                 last_used_at=raw.get("last_used_at"))


class Registry:
    def __init__(self, redis: aioredis.Redis, keys: Keys):
        self.redis = redis
        self.keys = keys
        self._indexed = False
        self._use_token = redis.register_script(_USE_TOKEN)

    # accounts and tokens

    async def create_account(self, username: str, token: str | None = None, name: str | None = None,
                             kind: str = "user", roles: tuple[str, ...] = (),
                             token_name: str | None = None) -> str:
        """Create (or keep) an account and add a token to it, and grant it `roles`; returns the
        token in the clear once."""
        k = self.keys
        pipe = self.redis.pipeline(transaction=True)
        pipe.hsetnx(k.account(username), "username", username)
        pipe.hsetnx(k.account(username), "type", kind)
        pipe.hsetnx(k.account(username), "name", name or username)
        pipe.hsetnx(k.account(username), "created_at", now_iso())
        pipe.sadd(k.accounts(), username)
        await pipe.execute()
        if roles:
            await self.grant(username, *roles)
        _, clear = await self.create_token(username, name=token_name, token=token)
        return clear

    async def create_token(self, username: str, name: str | None = None, expires_at: str | None = None,
                           token: str | None = None) -> tuple[Token, str]:
        """A new token of an existing account: its record and the token in the clear (shown once)."""
        if not await self.redis.exists(self.keys.account(username)):
            raise NotFound("Account", username)
        if expires_at is not None:
            expires_at = _canonical_time("expires_at", expires_at)
        token = token or new_token()
        digest = token_digest(token)
        rec = Token(id=token_id(digest), username=username, name=name, prefix=token[:7], created_at=now_iso(),
                    expires_at=expires_at)
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(self.keys.token(digest), mapping=rec.to_redis())
        pipe.sadd(self.keys.account_tokens(username), digest)
        pipe.hset(self.keys.token_ids(), rec.id, digest)
        await pipe.execute()
        return rec, token

    async def _token_digests(self, username: str | None = None) -> list[str]:
        """The digests of one account's tokens, or of every account's."""
        names = [username] if username else sorted(await self.redis.smembers(self.keys.accounts()))
        pipe = self.redis.pipeline(transaction=False)
        for n in names:
            pipe.smembers(self.keys.account_tokens(n))
        return [d for ds in await pipe.execute() for d in ds]

    async def list_tokens(self, username: str | None = None) -> list[Token]:
        """Tokens of one account, or of every account, oldest first."""
        digests = await self._token_digests(username)
        pipe = self.redis.pipeline(transaction=False)
        for d in digests:
            pipe.hgetall(self.keys.token(d))
        out = [Token.from_redis(raw) if "id" in raw else _legacy_token(d, raw)
               for d, raw in zip(digests, await pipe.execute(), strict=True) if raw]
        return sorted(out, key=lambda t: (t.username, t.created_at or "", t.id))

    async def revoke_token(self, token: str) -> str | None:
        """Make `token` (given in the clear) stop working; returns whose it was, or None."""
        return await self._revoke_digest(token_digest(token))

    async def revoke_token_id(self, tid: str) -> Token | None:
        """Make the token with this id stop working, at once on every router; its record, or None."""
        digest = await self.redis.hget(self.keys.token_ids(), tid)
        if digest is None:  # a token created before ids existed: its id is still derived from its digest
            digest = next((d for d in await self._token_digests() if token_id(d) == tid), None)
        if digest is None:
            return None
        raw = await self.redis.hgetall(self.keys.token(digest))
        if not raw:
            return None
        rec = Token.from_redis(raw) if "id" in raw else _legacy_token(digest, raw)
        await self._revoke_digest(digest)
        return rec

    async def _revoke_digest(self, digest: str) -> str | None:
        key = self.keys.token(digest)
        username = await self.redis.hget(key, "username")
        if username:
            pipe = self.redis.pipeline(transaction=True)
            pipe.delete(key)
            pipe.srem(self.keys.account_tokens(username), digest)
            pipe.hdel(self.keys.token_ids(), token_id(digest))
            pipe.publish(self.keys.auth_channel(), digest)
            await pipe.execute()
        return username

    async def rotate_tokens(self, username: str) -> str:
        """Revoke every token of the account and return a new one."""
        if not await self.redis.exists(self.keys.account(username)):
            raise NotFound("Account", username)
        for digest in await self.redis.smembers(self.keys.account_tokens(username)):
            await self._revoke_digest(digest)
        _, token = await self.create_token(username, name="rotated")
        return token

    async def configure_token(self, username: str, token: str, roles: tuple[str, ...] = ()) -> None:
        """The operator's configured token (`VENDO_API_TOKEN`) for the account: when it changes,
        the one configured before stops working."""
        digest = token_digest(token)
        before = await self.redis.hget(self.keys.account(username), "configured_token")
        if not await self.redis.exists(self.keys.token(digest)):
            await self.create_account(username, token, roles=roles, token_name="VENDO_API_TOKEN")
        elif roles:
            await self.grant(username, *roles)
        if before and before != digest:
            await self._revoke_digest(before)
        await self.redis.hset(self.keys.account(username), "configured_token", digest)

    async def account_for_token(self, token: str) -> Account | None:
        """The account a token acts for, with its organizations; None for an unknown, expired or
        revoked token or a disabled account. Two round trips."""
        return await self.account_for_digest(token_digest(token))

    async def account_for_digest(self, digest: str) -> Account | None:
        """As `account_for_token`, from the token's digest (what a web session keeps)."""
        key = self.keys.token(digest)
        username, expires_at = await self._use_token(keys=[key], args=[now_iso()])
        if not username:
            return None
        if expires_at and parse_iso(expires_at) <= time.time():
            return None
        acct = await self.get_account(username)
        return None if acct is None or acct.disabled else acct

    async def get_account(self, username: str) -> Account | None:
        return (await self._accounts([username]))[0]

    async def list_accounts(self) -> list[Account]:
        names = sorted(await self.redis.smembers(self.keys.accounts()))
        return [a for a in await self._accounts(names) if a is not None]

    async def _accounts(self, names: list[str]) -> list[Account | None]:
        """The accounts, each with the organizations it is a member of (one round trip)."""
        pipe = self.redis.pipeline(transaction=False)
        for n in names:
            pipe.hgetall(self.keys.account(n))
            pipe.smembers(self.keys.account_orgs(n))
        found = await pipe.execute()
        out = []
        for raw, orgs in zip(found[::2], found[1::2], strict=True):
            acct = Account.from_redis(raw)
            if acct is not None:
                acct.orgs = sorted(orgs)
            out.append(acct)
        return out

    async def update_account(self, username: str, *, roles: list[str] | None = None,
                             disabled: bool | None = None, limit_nanos: Any = UNSET) -> Account:
        """Change an account in one atomic write: replace its roles, disable (enable) it (its tokens
        stop working; its models, predictions and files stay), set its spend limit per billing
        period (None: none). Every router drops its cached accounts at once. NotFound if absent."""
        key = self.keys.account(username)
        if not await self.redis.exists(key):
            raise NotFound("Account", username)
        pipe = self.redis.pipeline(transaction=True)
        if roles is not None:
            check_roles(roles)
            pipe.hset(key, "roles", json.dumps(sorted(set(roles))))
        if disabled is not None:
            pipe.hset(key, "disabled", "1" if disabled else "0")
        if limit_nanos is None:
            pipe.hdel(key, "limit_nanos")
        elif limit_nanos is not UNSET:
            pipe.hset(key, "limit_nanos", str(limit_nanos))
        pipe.publish(self.keys.auth_channel(), "*")
        await pipe.execute()
        return await self.get_account(username)

    async def set_membership(self, org: str, username: str, member: bool = True) -> list[str]:
        """Add (or remove) a user to an organization; returns the organization's members."""
        org_acct, user = await self.get_account(org), await self.get_account(username)
        if org_acct is None or org_acct.type != "organization":
            raise NotFound("Organization", org)
        if user is None or user.type != "user":
            raise NotFound("User", username)
        pipe = self.redis.pipeline(transaction=True)
        if member:
            pipe.sadd(self.keys.org_members(org), username)
            pipe.sadd(self.keys.account_orgs(username), org)
        else:
            pipe.srem(self.keys.org_members(org), username)
            pipe.srem(self.keys.account_orgs(username), org)
        pipe.publish(self.keys.auth_channel(), "*")
        pipe.smembers(self.keys.org_members(org))
        return sorted((await pipe.execute())[-1])

    async def members(self, org: str) -> list[str]:
        return sorted(await self.redis.smembers(self.keys.org_members(org)))

    # packages (stored once per digest, shared by the versions of any model with those contents)

    def package_lock(self, digest: str) -> RedisLock:
        """Held while a package is stored for a new version or removed after its last one."""
        return RedisLock(self.redis, self.keys.package_lock(digest))

    async def package_in_use(self, digest: str) -> bool:
        return bool(await self.redis.scard(self.keys.package_versions(digest)))

    async def grant(self, username: str, *roles: str, revoke: bool = False) -> list[str]:
        """Add (or with `revoke`, remove) roles of an account; returns its roles."""
        check_roles(roles, "role")
        acct = await self.get_account(username)
        if acct is None:
            raise NotFound("Account", username)
        new = set(acct.roles) - set(roles) if revoke else set(acct.roles) | set(roles)
        return (await self.update_account(username, roles=sorted(new))).roles

    # models

    async def get_model(self, owner: str, name: str) -> Model | None:
        return _model(await self.redis.hgetall(self.keys.model(owner, name)))

    async def model_and_version(self, owner: str, name: str, vid: str) -> tuple[Model | None, bool]:
        """(the model or None, whether `vid` is a live version of it), in one round trip."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(self.keys.model(owner, name))
        pipe.zscore(self.keys.model_versions(owner, name), vid)
        raw, score = await pipe.execute()
        return _model(raw), score is not None

    async def version_live(self, vid: str) -> bool:
        """Whether `vid` is a registered version (not deleted; a late replica's setup fields alone
        do not make one)."""
        return bool(await self.redis.hexists(self.keys.version(vid), "model"))

    async def create_model(self, owner: str, name: str, visibility: str, **fields: Any) -> Model:
        """Create `owner/name` with the optional `fields` (description, hardware, URLs) that are not
        None, and index it for listing. Raises Conflict when it exists."""
        key, ref = self.keys.model(owner, name), f"{owner}/{name}"
        ts = time.time()
        model = Model(owner=owner, name=name, visibility=visibility, created_at=now_iso(ts), created_ts=ts,
                      **{k: v for k, v in fields.items() if v is not None})
        async with self.redis.pipeline(transaction=True) as pipe:
            try:
                await pipe.watch(key)
                if await pipe.hexists(key, "owner"):
                    raise Conflict(f"model {ref} already exists")
                pipe.multi()
                pipe.delete(key)  # a stray run counter left by a deleted model's last prediction
                pipe.hset(key, mapping=model.to_redis())
                pipe.zadd(self.keys.models(), {ref: ts})
                pipe.zadd(self._index(MODEL_CREATED, model), {ref: ts})
                pipe.zadd(self._index(LATEST_VERSION_CREATED, model), {ref: _unversioned(ts)})
                await pipe.execute()
            except aioredis.WatchError:
                raise Conflict(f"model {ref} already exists") from None
        return model

    async def ensure_model(self, owner: str, name: str, visibility: str = "private",
                           description: str | None = None, hardware: str | None = None) -> Model:
        """The model, created with these fields when it does not exist yet (a first push)."""
        try:
            return await self.create_model(owner, name, visibility, description=description or None,
                                           hardware=hardware)
        except Conflict:
            return await self.get_model(owner, name)

    async def delete_model(self, owner: str, name: str) -> bool:
        """Delete a model that has no versions; False if it does not exist. Raises Conflict naming
        how many versions it still has."""
        key, vkey, ref = self.keys.model(owner, name), self.keys.model_versions(owner, name), f"{owner}/{name}"
        async with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(key, vkey)
                    model = _model(await pipe.hgetall(key))
                    if model is None:
                        return False
                    n = await pipe.zcard(vkey)
                    if n:
                        raise Conflict(f"model {ref} still has {n} version{'s' if n > 1 else ''}; "
                                       "delete them first")
                    pipe.multi()
                    pipe.delete(key, vkey)
                    pipe.publish(self.keys.catalogue_channel(), ref)
                    pipe.zrem(self.keys.models(), ref)
                    for sort_by in SORT_KEYS:
                        pipe.zrem(self._index(sort_by, model), ref)
                    await pipe.execute()
                    return True
                except aioredis.WatchError:
                    continue

    async def list_models(self) -> list[Model]:
        """Every model, newest first (for operators; the API pages with `page_models`)."""
        refs = await self.redis.zrevrange(self.keys.models(), 0, -1)
        return [m for m in await self.get_models(refs) if m is not None]

    async def get_models(self, refs: list[str]) -> list[Model | None]:
        pipe = self.redis.pipeline(transaction=False)
        for ref in refs:
            owner, name = ref.split("/", 1)
            pipe.hgetall(self.keys.model(owner, name))
        return [_model(raw) for raw in await pipe.execute()] if refs else []

    async def page_models(self, viewer: str | list[str], sort_by: str, desc: bool, after: tuple[float, str] | None,
                          limit: int, keep: Callable[[Model], bool]) -> tuple[list[Model], tuple | None]:
        """One page of the models `viewer` may see (the public index merged with the private ones
        of the viewer, or of each of a list of owners: an account and its organizations), ordered
        by `sort_by`, after the keyset position `after` (score, ref), keeping those `keep`
        accepts. Returns (models, position of the last one if more follow)."""
        await self._ensure_indexes()
        owners = [viewer] if isinstance(viewer, str) else viewer
        keys = [self.keys.models_sorted(sort_by), *(self.keys.models_sorted(sort_by, o) for o in owners)]
        out: list[tuple[Model, tuple[float, str]]] = []
        pos, chunk = after, limit + 1
        while len(out) <= limit:
            rows = await self._merged_after(keys, pos, desc, chunk)
            for (ref, score), model in zip(rows, await self.get_models([r for r, _ in rows]), strict=True):
                pos = (score, ref)
                if model is not None and keep(model):
                    out.append((model, pos))
                    if len(out) > limit:
                        break
            if len(rows) < chunk:
                break
            chunk = min(chunk * 2, 1000)  # a filter (search) that rejects most rows
        page = out[:limit]
        return [m for m, _ in page], (page[-1][1] if len(out) > limit else None)

    async def _merged_after(self, keys: list[str], pos, desc: bool, n: int) -> list[tuple[str, float]]:
        """The first `n` (ref, score) after `pos` across the sorted sets `keys`, in order."""
        rows = [r for key in keys for r in await self._after(key, pos, desc, n)]
        rows.sort(key=lambda r: (r[1], r[0]), reverse=desc)
        return rows[:n]

    async def _after(self, key: str, pos, desc: bool, n: int) -> list[tuple[str, float]]:
        """Up to `n` (ref, score) of one sorted set strictly after `pos` (ties by ref, as Redis orders)."""
        out: list[tuple[str, float]] = []
        offset = 0
        while len(out) < n:
            bound = repr(pos[0]) if pos else None
            if desc:
                rows = await self.redis.zrevrangebyscore(key, bound or "+inf", "-inf", start=offset, num=n,
                                                         withscores=True)
            else:
                rows = await self.redis.zrangebyscore(key, bound or "-inf", "+inf", start=offset, num=n,
                                                      withscores=True)
            offset += len(rows)
            for ref, score in rows:
                if pos and score == pos[0] and (ref >= pos[1] if desc else ref <= pos[1]):
                    continue  # at or before the position within the same score
                out.append((ref, score))
            if len(rows) < n:
                break
        return out[:n]

    def _index(self, sort_by: str, model: Model) -> str:
        private = None if model.visibility == "public" else model.owner
        return self.keys.models_sorted(sort_by, private)

    async def _ensure_indexes(self) -> None:
        """Build the listing indexes once for models registered before they existed."""
        if self._indexed or await self.redis.exists(self.keys.models_indexed()):
            self._indexed = True
            return
        rows = await self.redis.zrange(self.keys.models(), 0, -1, withscores=True)
        pipe = self.redis.pipeline(transaction=False)
        for ref, _ in rows:
            owner, name = ref.split("/", 1)
            pipe.hgetall(self.keys.model(owner, name))
            pipe.zrevrange(self.keys.model_versions(owner, name), 0, 0, withscores=True)
        found = await pipe.execute() if rows else []
        pipe = self.redis.pipeline(transaction=False)
        for i, (ref, created) in enumerate(rows):
            model, top = _model(found[2 * i]), found[2 * i + 1]
            if model is not None:
                pipe.zadd(self._index(MODEL_CREATED, model), {ref: created})
                pipe.zadd(self._index(LATEST_VERSION_CREATED, model), {ref: top[0][1] if top else _unversioned(created)})
        pipe.set(self.keys.models_indexed(), "1")
        await pipe.execute()
        self._indexed = True

    async def count_run(self, owner: str, name: str) -> None:
        pipe = self.redis.pipeline(transaction=False)
        self.count_run_in(pipe, owner, name)
        await pipe.execute()

    def count_run_in(self, pipe: Any, owner: str, name: str) -> None:
        """Count one run of `owner/name` in `pipe` (a prediction's create: the same round trip)."""
        pipe.hincrby(self.keys.model(owner, name), "run_count", 1)

    # versions

    async def add_version(self, record: Version) -> tuple[Version, bool]:
        """Register `record` as a version of its existing model and make it the latest. Returns
        (record, created). Registering the same id again is a no-op."""
        vid, ref = record.id, record.model
        owner, name = ref.split("/", 1)
        mkey, key = self.keys.model(owner, name), self.keys.version(vid)
        async with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(mkey, key)
                    existing = _version(await pipe.hgetall(key))
                    if existing:
                        await pipe.unwatch()
                        return existing, False
                    model = _model(await pipe.hgetall(mkey))
                    if model is None:
                        raise NotFound("Model", ref)
                    ts = time.time()
                    if record.created_at is None:
                        record = record.model_copy(update={"created_at": now_iso(ts)})
                    pipe.multi()
                    pipe.delete(key)  # setup fields a deleted version's last replica may have left
                    pipe.hset(key, mapping=record.to_redis(exclude={"readme"}))
                    if record.readme:
                        pipe.set(self.keys.version_readme(vid), record.readme)
                    if record.package_digest:
                        pipe.sadd(self.keys.package_versions(record.package_digest), vid)
                    pipe.zadd(self.keys.model_versions(owner, name), {vid: ts})
                    pipe.hset(mkey, "latest_version", vid)
                    pipe.zadd(self._index(LATEST_VERSION_CREATED, model), {ref: ts})
                    await pipe.execute()
                    break
                except aioredis.WatchError:
                    continue
        return await self.get_version(vid), True

    async def readme(self, vid: str) -> str | None:
        return await self.redis.get(self.keys.version_readme(vid))

    async def delete_version(self, owner: str, name: str, vid: str) -> Version | None:
        """Remove `vid` from the registry (no new prediction can use it) and move the model's
        latest version to the previous one. Returns the removed record; None when it is not a
        version of `owner/name`."""
        ref, mkey, vkey = f"{owner}/{name}", self.keys.model(owner, name), self.keys.model_versions(owner, name)
        async with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(mkey, vkey)
                    model = _model(await pipe.hgetall(mkey))
                    if model is None or await pipe.zscore(vkey, vid) is None:
                        await pipe.unwatch()
                        return None
                    record = _version(await pipe.hgetall(self.keys.version(vid))) or Version(id=vid, model=ref)
                    rest = [r for r in await pipe.zrevrange(vkey, 0, 1, withscores=True) if r[0] != vid]
                    pipe.multi()
                    pipe.zrem(vkey, vid)
                    pipe.publish(self.keys.catalogue_channel(), ref)
                    pipe.delete(self.keys.version(vid), self.keys.version_readme(vid))
                    if record.package_digest:
                        pipe.srem(self.keys.package_versions(record.package_digest), vid)
                    latest = self._index(LATEST_VERSION_CREATED, model)
                    if rest:
                        pipe.hset(mkey, "latest_version", rest[0][0])
                        pipe.zadd(latest, {ref: rest[0][1]})
                    else:
                        pipe.hdel(mkey, "latest_version")
                        pipe.zadd(latest, {ref: _unversioned(_created_ts(model))})
                    await pipe.execute()
                    return record
                except aioredis.WatchError:
                    continue

    async def get_version(self, vid: str) -> Version | None:
        return _version(await self.redis.hgetall(self.keys.version(vid)))

    async def get_versions(self, vids: list[str]) -> list[Version | None]:
        pipe = self.redis.pipeline(transaction=False)
        for vid in vids:
            pipe.hgetall(self.keys.version(vid))
        return [_version(raw) for raw in await pipe.execute()] if vids else []

    async def list_version_ids(self, owner: str, name: str, limit: int = 100) -> list[str]:
        return await self.redis.zrevrange(self.keys.model_versions(owner, name), 0, limit - 1)

    async def record_setup(self, vid: str, fields: dict[str, Any], *, replica: str = "",
                           counts: list[tuple[str, int | float]] = ()) -> None:
        """What a replica reports of its setup (status, error, logs, time) on the version, the
        setup in the version's day of replica starts, and `counts` in the platform's metrics: one
        round trip."""
        done = float(fields.get("setup_completed_at") or time.time())
        starts = self.keys.replica_starts(vid)
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(self.keys.version(vid), mapping=encode_fields(fields, Version.JSON))
        pipe.zadd(starts, {f"{done!r}:{replica}": done})
        pipe.zremrangebyscore(starts, "-inf", done - REPLICA_STARTS_KEPT_S)
        pipe.expire(starts, int(REPLICA_STARTS_KEPT_S))
        metrics.add(pipe, self.keys.metrics(), counts)
        await pipe.execute()

    async def version_activity(self, vids: list[str], since: float) -> dict[str, dict[str, int]]:
        """Per version: predictions `queued` and `running` now (the metrics gauges) and
        `replica_starts` since `since`. One round trip."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(self.keys.metrics())
        for vid in vids:
            pipe.zcount(self.keys.replica_starts(vid), since, "+inf")
        gauges, *starts = await pipe.execute()
        out = {vid: {"queued": 0, "running": 0, "replica_starts": int(n)} for vid, n in zip(vids, starts, strict=True)}
        for name, what in (("predictions_queued", "queued"), ("predictions_running", "running")):
            for (_model, vid), value in metrics.series(gauges, name).items():
                if vid in out:
                    out[vid][what] = max(0, int(value))
        return out
