"""Model administration and the catalogue: create and delete models, list and search them with
keyset cursors, delete versions (their Serve app goes once their predictions finish), hardware SKUs
and collections. The HTTP layer calls this; this calls the registry, the prediction store and the
Serve app manager."""

from __future__ import annotations

import asyncio
import logging
from typing import Callable

from router.apps import AppManager
from router.services.deployments import DeploymentService
from router.services.resolve import Resolver
from router.wire import ModelCreate
from vendo_core.collections import Collection, CollectionsConfig
from vendo_core.errors import Conflict, Forbidden, InvalidRequest, ModelNotFound, NotFound, VersionNotFound
from vendo_core.hardware import HardwareConfig
from vendo_core.ids import ModelRef, app_name
from vendo_core.records import Account, Model, Version
from vendo_core.registry import LATEST_VERSION_CREATED, SORT_KEYS, Registry, visible
from vendo_core.storage import ObjectStore
from vendo_core.store import PredictionStore, decode_cursor, encode_cursor

log = logging.getLogger("vendo.catalogue")

PAGE_SIZE = 100
DIRECTIONS = ("asc", "desc")
MAX_QUERY_CHARS = 1000
WAIT_SLICE_S = 60.0  # how long one wait on a running prediction blocks before looking again

ModelWithLatest = tuple[Model, Version | None]


class Catalogue:
    def __init__(self, registry: Registry, store: PredictionStore, apps: AppManager, *,
                 skus: Callable[[], HardwareConfig], collections: Callable[[], CollectionsConfig],
                 deployments: DeploymentService | None = None, objects: ObjectStore | None = None,
                 resolver: Resolver | None = None):
        """`skus()` and `collections()` return the hardware and collections configs."""
        self.registry = registry
        self.resolver = resolver
        self.store = store
        self.apps = apps
        self.skus = skus
        self.deployments = deployments
        self.objects = objects
        self.collections_config = collections
        self._teardowns: set[asyncio.Task] = set()

    # models

    async def create_model(self, account: Account, body: ModelCreate) -> ModelWithLatest:
        """Create a model of the caller's. 404 for another owner (as for a model one cannot
        see), 409 when it exists, 422 naming the field on bad input."""
        if not account.acts_for(body.owner):
            raise NotFound("Account", body.owner)
        account.require("push", "create models")
        ModelRef(body.owner, body.name).check_names("name")
        self.skus().pick(body.hardware)
        fields = body.model_dump(exclude={"owner", "name", "visibility"})
        return await self.registry.create_model(body.owner, body.name, body.visibility, **fields), None

    async def owned_model(self, account: Account, owner: str, name: str) -> Model:
        """The model if the caller owns it; 404 when the caller cannot see it, 403 when it can
        but does not own it."""
        ModelRef(owner, name).check_names()
        model = await self.registry.get_model(owner, name)
        if not visible(model, account):
            raise ModelNotFound(f"{owner}/{name}")
        if not account.acts_for(owner):
            raise Forbidden(f"only {owner} can change {owner}/{name}")
        return model

    async def delete_model(self, account: Account, owner: str, name: str) -> None:
        """Delete a model with no versions (409 naming how many it still has)."""
        await self.owned_model(account, owner, name)
        if not await self.registry.delete_model(owner, name):
            raise ModelNotFound(f"{owner}/{name}")
        self._forget(f"{owner}/{name}")

    async def page(self, account: Account, *, sort_by: str | None, direction: str | None,
                   cursor: str | None, query: str | None = None) -> tuple[list[ModelWithLatest], str | None]:
        """A page of the models the caller can see (public ones and its own), sorted by `sort_by`
        (default: latest version first), matching every word of `query` in owner/name or
        description, case-insensitively. Returns (models with their latest versions, next cursor)."""
        sort_by = sort_by or LATEST_VERSION_CREATED
        direction = direction or "desc"
        if sort_by not in SORT_KEYS:
            raise InvalidRequest("sort_by", f"must be one of {list(SORT_KEYS)}")
        if direction not in DIRECTIONS:
            raise InvalidRequest("sort_direction", f"must be one of {list(DIRECTIONS)}")
        try:
            after = decode_cursor(cursor) if cursor else None
        except ValueError as e:
            raise InvalidRequest("cursor", str(e)) from e
        terms = _terms(query) if query is not None else None

        def keep(model: Model) -> bool:
            return visible(model, account) and (terms is None or _matches(model, terms))

        models, last = await self.registry.page_models([account.username, *account.orgs], sort_by,
                                                       direction == "desc", after,
                                                       PAGE_SIZE, keep)
        return await self.with_latest(models), (encode_cursor(*last) if last else None)

    async def with_latest(self, models: list[Model]) -> list[ModelWithLatest]:
        """Each model with its latest version record (fetched in one round trip)."""
        vids = [m.latest_version for m in models]
        found = iter(await self.registry.get_versions([v for v in vids if v]))
        return [(m, next(found) if vid else None) for m, vid in zip(models, vids, strict=True)]

    # versions

    async def delete_version(self, account: Account, owner: str, name: str, vid: str) -> None:
        """Remove a version: at once no new prediction can use it and the model's latest version
        is the previous one; its Serve app is deleted in the background once every prediction
        of it that is starting or processing has finished (those finish normally). 409 while one
        of the caller's deployments' current release runs it."""
        await self.owned_model(account, owner, name)
        used_by = await self.deployments.using_version(vid) if self.deployments else []
        # only the caller's own deployments hold a version back: another account's deployment of
        # a public version never blocks its owner (that deployment's predictions then say why)
        used_by = [ref for ref in used_by if account.acts_for(ref.split("/", 1)[0])]
        if used_by:
            raise Conflict(f"version {vid} is the current release of deployment(s) {', '.join(used_by)}; "
                           "update or delete them first")
        deleted = await self.registry.delete_version(owner, name, vid)
        if deleted is None:
            raise VersionNotFound(f"{owner}/{name}:{vid}")
        self._forget(f"{owner}/{name}")
        task = asyncio.get_running_loop().create_task(self._teardown(deleted))
        self._teardowns.add(task)
        task.add_done_callback(self._teardowns.discard)

    def _forget(self, ref: str) -> None:
        """This router's cache of `ref` goes now; other routers' on the registry's message."""
        if self.resolver is not None:
            self.resolver.forget_model(ref)

    async def _teardown(self, version: Version) -> None:
        vid = version.id
        app = app_name(vid)
        try:
            await self.apps.delete_when_idle(app, lambda: self.store.live_of_version(vid), self._wait_ended)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - the idle reaper removes the app later anyway
            log.exception("deleting the Serve app %s of deleted version %s failed", app, vid)
        try:
            await self.remove_package_if_unused(version)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - a leftover package costs storage, never correctness
            log.exception("removing the package of deleted version %s failed", vid)

    async def remove_package_if_unused(self, version: Version) -> bool:
        """Delete a deleted version's package unless a live version (of any model) shares it."""
        digest, key = version.package_digest, version.package_key
        if not digest or not key or self.objects is None:
            return False
        async with self.registry.package_lock(digest):
            if await self.registry.package_in_use(digest):
                return False
            await asyncio.to_thread(self.objects.delete_prefix, key)
        log.info("removed package %s of deleted version %s", key, version.id)
        return True

    async def _wait_ended(self, pids: list[str]) -> None:
        for pid in pids:  # one at a time: each wait holds a Redis connection while it blocks
            await self.store.wait_terminal(pid, WAIT_SLICE_S)

    # hardware and collections

    def hardware(self) -> list[tuple[str, str]]:
        """(sku, name) of every hardware SKU, in the config's order."""
        return [(sku, s.name) for sku, s in self.skus().skus.items()]

    def collections(self) -> list[Collection]:
        return list(self.collections_config().collections)

    async def collection(self, account: Account, slug: str) -> tuple[Collection, list[ModelWithLatest]]:
        """A collection with those of its models that exist and the caller can see, in order."""
        c = self.collections_config().get(slug)
        if c is None:
            raise NotFound("Collection", slug)
        models = [m for m in await self.registry.get_models(list(c.models)) if visible(m, account)]
        return c, await self.with_latest(models)


def _terms(query: str) -> list[str]:
    terms = query.lower().split()
    if not terms:
        raise InvalidRequest("query", "must not be empty")
    if len(query) > MAX_QUERY_CHARS:
        raise InvalidRequest("query", f"must be at most {MAX_QUERY_CHARS} characters")
    return terms


def _matches(model: Model, terms: list[str]) -> bool:
    text = f"{model.ref} {model.description or ''}".lower()
    return all(t in text for t in terms)
