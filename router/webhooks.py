"""Webhooks: the create-time fields (`webhook`, `webhook_events_filter`, `webhook_completed`), the
address policy, per-account signing secrets, and Standard Webhooks signatures. Delivery itself is
in `webhook_delivery.py`.

Signatures are what `replicate.webhooks.validate` checks: `webhook-signature: v1,<b64>` where the
signature is HMAC-SHA256, keyed with the base64-decoded part of `whsec_<b64>`, over
`"{webhook-id}.{webhook-timestamp}.{body}"`."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
import urllib.parse
from typing import Any

import redis.asyncio as aioredis

from vendo_core.errors import InvalidRequest
from vendo_core.keys import Keys
from vendo_core.netpolicy import NonPublicAddress, check_public
from vendo_core.records import Prediction

EVENTS = ("start", "output", "logs", "completed")
PROGRESS_EVENTS = frozenset({"output", "logs"})
MAX_URL_CHARS = 2048
SECRET_PREFIX = "whsec_"


# signing


def new_secret() -> str:
    """`whsec_` + standard base64 of 32 random bytes (no `_` after the prefix: the client splits on it)."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def signature(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    """`v1,<base64 HMAC-SHA256>` of `id.timestamp.body` for the `webhook-signature` header."""
    key = base64.b64decode(secret.split("_", 1)[1])
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def signed_headers(secret: str, webhook_id: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    ts = int(time.time()) if timestamp is None else timestamp
    return {
        "content-type": "application/json",
        "webhook-id": webhook_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": signature(secret, webhook_id, ts, body),
        "user-agent": "vendo-webhooks",
    }


def wants(rec: Prediction, event: str) -> bool:
    """Whether the prediction's `webhook` subscribed to `event` (no filter: all four)."""
    if not rec.webhook:
        return False
    chosen = rec.webhook_events_filter
    return event in (EVENTS if chosen is None else chosen)


def retry_offsets(base_s: float, attempts: int) -> list[float]:
    """Seconds after completion at which the `completed` webhook is tried: 0, b, 3b, 7b, ...
    (with b = 1 s and 7 attempts the last one is 63 s after completion)."""
    return [base_s * (2 ** k - 1) for k in range(max(1, attempts))]


# addresses


# create-time fields


def _url(field: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidRequest(field, "must be an http or https URL")
    if len(value) > MAX_URL_CHARS:
        raise InvalidRequest(field, f"must be at most {MAX_URL_CHARS} characters")
    try:
        parts = urllib.parse.urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError as e:
        raise InvalidRequest(field, f"is not a valid URL: {e}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidRequest(field, "must be an http or https URL with a host")
    return value


def _events(value: Any) -> list[str]:
    field = "webhook_events_filter"
    if not isinstance(value, list) or not all(isinstance(e, str) for e in value):
        raise InvalidRequest(field, f"must be a list of event names from {list(EVENTS)}")
    unknown = [e for e in value if e not in EVENTS]
    if unknown:
        raise InvalidRequest(field, f"unknown event {unknown[0]!r}; events are {list(EVENTS)}")
    return [e for e in EVENTS if e in value]


class WebhookPolicy:
    """Validates a create body's webhook fields; refuses non-public destinations unless allowed."""

    def __init__(self, allow_private: bool = False):
        self.allow_private = allow_private

    async def record_fields(self, body: dict[str, Any]) -> dict[str, Any]:
        """The prediction record's webhook fields from a create body. Raises InvalidRequest naming
        `webhook`, `webhook_completed` or `webhook_events_filter`."""
        out: dict[str, Any] = {}
        for field in ("webhook", "webhook_completed"):
            if body.get(field) is not None:
                out[field] = _url(field, body[field])
                if not self.allow_private:
                    await self._check(field, out[field])
        if body.get("webhook_events_filter") is not None:
            out["webhook_events_filter"] = _events(body["webhook_events_filter"])
        return out

    @staticmethod
    async def _check(field: str, url: str) -> None:
        try:
            await check_public(url)
        except NonPublicAddress as e:
            raise InvalidRequest(field, f"{e}; webhooks must reach a public address") from None
        except (OSError, UnicodeError) as e:
            host = urllib.parse.urlsplit(url).hostname
            raise InvalidRequest(field, f"cannot resolve host {host!r}: {e}") from None


# secrets


class WebhookSecrets:
    """One signing secret per account, created on first use (by the secret endpoint or a delivery)
    and rotated on request. Each router replica keeps a secret for `CACHE_S`, so a rotation
    reaches every replica's deliveries within that."""

    CACHE_S = 10.0

    def __init__(self, redis: aioredis.Redis, keys: Keys):
        self.redis = redis
        self.keys = keys
        self._cache: dict[str, tuple[float, str]] = {}

    async def get(self, username: str) -> str:
        hit = self._cache.get(username)
        if hit and time.monotonic() - hit[0] < self.CACHE_S:
            return hit[1]
        key = self.keys.webhook_secret(username)
        pipe = self.redis.pipeline(transaction=True)
        pipe.set(key, new_secret(), nx=True)
        pipe.get(key)
        _, secret = await pipe.execute()
        self._cache[username] = (time.monotonic(), secret)
        return secret

    async def rotate(self, username: str) -> str:
        """A new secret for the account; the old one signs nothing from now on."""
        secret = new_secret()
        await self.redis.set(self.keys.webhook_secret(username), secret)
        self._cache[username] = (time.monotonic(), secret)
        return secret
