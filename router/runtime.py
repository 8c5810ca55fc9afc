"""The composition root: everything one router replica holds (settings, Redis, stores, the Serve
app manager, the services every door calls, and their background loops), each collaborator built
once and handed to the others through their constructors."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from functools import partial
from typing import Any, Callable

import redis.asyncio as aioredis

from deployments.supervisor import WorkerOptions
from router.apps import AppManager
from router.capacity import WorkingSet
from router.deadlines import Deadlines
from router.openslots import OpenSlots
from router.ratelimit import RateLimiter
from router.retention import Retention
from router.services.accounts import AccountService
from router.services.batches import BatchService
from router.services.catalogue import Catalogue
from router.services.deployments import DeploymentService
from router.services.ops import Ops
from router.services.predictions import PredictionService
from router.services.resolve import Resolver
from router.services.versions import VersionService, introspect_in_ray
from router.sessions import Sessions
from router.webhook_delivery import WebhookDelivery
from router.webhooks import WebhookPolicy, WebhookSecrets
from vendo_core.billing import Usage, nanos_of_usd
from vendo_core.collections import collections_for
from vendo_core.files import Files
from vendo_core.hardware import skus_for
from vendo_core.keys import Keys
from vendo_core.packaging import UnpackLimits
from vendo_core.records import Account
from vendo_core.redisconn import connect
from vendo_core.registry import Registry, token_digest
from vendo_core.settings import Settings
from vendo_core.signing import signer_for
from vendo_core.storage import ObjectStore, open_store
from vendo_core.store import PredictionStore

log = logging.getLogger("vendo.router")
ACCOUNT_CACHE_S = 5.0


class Runtime:
    """Built once per router replica by `connect`, or over fakes in unit tests: the collaborators
    that touch Redis, storage and Serve come in; the services are made from them here, once."""

    def __init__(self, settings: Settings, *, store: PredictionStore, registry: Registry, objects: ObjectStore,
                 apps: AppManager, files: Files, limiter: RateLimiter, redis: aioredis.Redis | None = None,
                 redis_url: str = ""):
        self.settings = settings
        self.redis_url = redis_url
        self.redis = redis
        self.keys = Keys(settings.redis_prefix)
        self.store = store
        self.registry = registry
        self.objects = objects
        self.apps = apps
        self.files = files
        self.limiter = limiter
        self.open_slots = OpenSlots(settings.max_open_per_account)
        skus = partial(skus_for, settings)
        self.resolver = Resolver(registry)
        self.usage = Usage(redis, self.keys, settings.billing_period) if redis else None
        self.sessions = Sessions(redis, self.keys, registry, settings.session_ttl_s) if redis else None
        # what needs Redis beyond the store and the registry (absent in the in-process unit app)
        self.deployments = DeploymentService(redis, self.keys, apps, self.resolver, skus) if redis else None
        self.predictions = PredictionService(store, self.resolver, apps, deployments=self.deployments,
                                             lease_s=settings.lease_s, max_queue_s=settings.max_queue_s,
                                             max_queued=settings.max_queued_per_account, max_replicas=settings.autoscale_max_replicas,
                                             files=files, webhooks=WebhookPolicy(settings.allow_private_webhooks),
                                             skus=skus, usage=self.usage)
        self.versions = VersionService(registry, self.resolver, objects, apps, skus=skus,
                                       limits=UnpackLimits.of(settings),
                                       introspect=partial(introspect_in_ray, options=WorkerOptions.of(settings),
                                                          timeout_s=settings.introspect_timeout_s))
        self.accounts = AccountService(registry, default_limit_nanos=None if settings.default_limit_usd is None
                                       else nanos_of_usd(settings.default_limit_usd), usage=self.usage)
        self.catalogue = Catalogue(registry, store, apps, skus=skus, collections=partial(collections_for, settings),
                                   deployments=self.deployments, objects=objects, resolver=self.resolver)
        self.webhook_delivery: WebhookDelivery | None = None
        self.ops = Ops(redis, self.keys, apps, objects) if redis is not None else None
        self.batches = BatchService(redis, self.keys) if redis is not None else None
        self.working_set = WorkingSet(apps, store, skus, waiting=self.predictions.waiting,
                                      after_s=settings.evict_after_s, idle_s=settings.evict_idle_s,
                                      local_busy=self.predictions.busy_apps)
        apps.on_create = self.working_set.make_room_for
        if redis is not None:
            self.deadlines = Deadlines(redis, self.keys, self.predictions.cancel_now)
            self.retention = Retention(redis, self.keys, objects)
            self.webhook_secrets = WebhookSecrets(redis, self.keys)
            self.webhook_delivery = WebhookDelivery(
                redis, self.keys, store, self.webhook_secrets, self.url_for,
                settings.self_url,
                allow_private=settings.allow_private_webhooks, retry_base_s=settings.webhook_retry_base_s,
                max_attempts=settings.webhook_max_attempts, timeout_s=settings.webhook_timeout_s,
                claim_idle_s=settings.webhook_claim_idle_s)
        self._accounts: dict[str, tuple[float, Account]] = {}
        self._tasks: list[asyncio.Task] = []

    @classmethod
    def connect(cls, settings: Settings, redis_url: str, build_app: Callable[[dict], Any]) -> Runtime:
        """The real runtime: one Redis pool, the object store `settings` name, Serve apps built
        with `build_app(version)`."""
        keys = Keys(settings.redis_prefix)
        redis = connect(redis_url, max_connections=512)
        registry = Registry(redis, keys)
        signer = signer_for(settings)
        objects = open_store(settings, signer=signer)
        return cls(
            settings, redis=redis, redis_url=redis_url, registry=registry, objects=objects,
            store=PredictionStore(redis, keys, settings.prediction_ttl_s, retention_s=settings.retention_s,
                                  max_log_bytes=settings.max_log_bytes, billing_period=settings.billing_period,
                                  blocking=connect(redis_url, settings.max_blocking_connections,
                                                   wait_for_connection=True)),
            apps=AppManager(redis, keys, build_app, settings.app_idle_s, version_live=registry.version_live,
                            grpc=settings.serve_grpc),
            files=Files(redis, keys, objects, expiry_s=settings.file_expiry_s,
                        signer=signer),
            limiter=RateLimiter(redis, keys, creates_per_min=settings.rate_limit_creates_per_min,
                                requests_per_min=settings.rate_limit_requests_per_min))

    async def account_for(self, token: str) -> Account | None:
        """The token's account, cached for ACCOUNT_CACHE_S; a revoked token, a disabled account
        or a membership change drops the cached entries on every router at once (`_watch_changes`)."""
        digest = token_digest(token)
        hit = self._accounts.get(digest)
        now = time.monotonic()
        if hit and now - hit[0] < ACCOUNT_CACHE_S:
            return hit[1]
        acct = await self.registry.account_for_token(token)
        if acct:
            self._accounts[digest] = (now, acct)
        return acct

    def _drop_cached(self) -> None:
        self._accounts.clear()
        self.resolver.forget_model()

    async def _watch_changes(self) -> None:
        """Drop cached accounts when tokens are revoked or accounts change, and cached models when
        a version or a model is deleted (Redis pub/sub); after a lost subscription, drop them all,
        since a message may have been missed."""
        auth, catalogue = self.registry.keys.auth_channel(), self.registry.keys.catalogue_channel()
        while True:
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(auth, catalogue)
                self._drop_cached()
                async for msg in pubsub.listen():
                    data = msg.get("data")
                    if not isinstance(data, str):
                        continue
                    if msg.get("channel") == catalogue:
                        self.resolver.forget_model(None if data == "*" else data)
                    elif data == "*":
                        self._accounts.clear()
                    else:
                        self._accounts.pop(data, None)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - resubscribe; the caches are dropped when we do
                log.warning("change subscription lost; resubscribing", exc_info=True)
                self._drop_cached()
                await asyncio.sleep(1.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    def url_for(self, base: str) -> Callable[[str], str]:
        expiry = self.settings.url_expiry_s
        return lambda key: self.objects.url(key, base, expiry)

    def start_background(self) -> None:
        s = self.settings
        loop = asyncio.get_running_loop()
        every = [
            (s.sweep_interval_s, self.predictions.sweep, "sweep", None),
            (s.lease_s / 3, self.predictions.renew_leases, "lease renewal", None),
            (s.reaper_interval_s, self.apps.reap_idle, "idle reaper", None),
            (s.sweep_interval_s, self.files.sweep, "file expiry", None),
        ]
        if self.redis is not None:
            every += [
                (s.reaper_interval_s, self.deployments.reconcile, "reconcile", 0.0),
                (min(1.0, s.sweep_interval_s), self.deadlines.sweep, "deadlines", None),
                (max(0.2, s.evict_after_s / 2), self.working_set.make_room, "eviction", None),
                (s.sweep_interval_s, self.retention.sweep, "retention", None),
            ]
        self._tasks = [loop.create_task(self._every(period, fn, what, first_s=first))
                       for period, fn, what, first in every]
        if self.webhook_delivery is not None:
            self._tasks.append(loop.create_task(self.webhook_delivery.run()))
        if self.redis is not None:
            self._tasks.append(loop.create_task(self._watch_changes()))

    async def _every(self, period_s: float, fn, what: str, first_s: float | None = None) -> None:
        delay = period_s if first_s is None else first_s
        while True:
            await asyncio.sleep(delay)
            delay = period_s
            try:
                await fn()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - a failed round is retried on the next tick
                log.exception("%s failed", what)

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        if self.webhook_delivery is not None:
            await self.webhook_delivery.close()
        if self.redis is not None:
            await self.redis.aclose()
