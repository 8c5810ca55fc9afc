"""Resolution of what a caller names (a version id, `owner/name[:version]`) to the (model, version)
records it may use, with visibility applied (404 for what it may not see) and immutable versions
cached. Every door resolves through this one class."""

from __future__ import annotations

import time
from typing import Any

from vendo_core.errors import InvalidRequest, ModelNotFound, VersionNotFound
from vendo_core.ids import VERSION_ID, ModelRef
from vendo_core.records import Account, Model, Version
from vendo_core.registry import Registry, visible

LIVE_CACHE_S = 5.0


class Resolver:
    """Versions are immutable, so cached for good; that a version is still live (and its model's
    record) is cached for LIVE_CACHE_S, and a deleted version or model drops its model's entries
    on every router at once (`forget_model`, from the registry's catalogue channel)."""

    def __init__(self, registry: Registry):
        self.registry = registry
        self._versions: dict[str, Version] = {}
        self._live: dict[str, dict[str, tuple[float, Model]]] = {}  # owner/name -> vid -> (when, model)

    def forget(self, vid: str) -> None:
        self._versions.pop(vid, None)

    def forget_model(self, ref: str | None = None) -> None:
        """Drop what is cached of model `ref` (owner/name), or of every model."""
        if ref is None:
            self._live.clear()
        else:
            self._live.pop(ref, None)

    async def _model_with(self, owner: str, name: str, vid: str) -> tuple[Model | None, bool]:
        """(the model, whether `vid` is a live version of it): `Registry.model_and_version`,
        its live answers cached."""
        ref = f"{owner}/{name}"
        hit = self._live.get(ref, {}).get(vid)
        now = time.monotonic()
        if hit is not None and now - hit[0] < LIVE_CACHE_S:
            return hit[1], True
        model, live = await self.registry.model_and_version(owner, name, vid)
        if model is not None and live:
            if len(self._live) > 4096:
                self._live.clear()  # a bound, not a policy: entries are seconds old at most anyway
            self._live.setdefault(ref, {})[vid] = (now, model)
        elif hit is not None:
            self._live.get(ref, {}).pop(vid, None)
        return model, live

    async def version(self, vid: str) -> Version | None:
        v = self._versions.get(vid)
        if v is None:
            v = await self.registry.get_version(vid)
            if v is not None:
                self._versions[vid] = v  # versions are immutable
        return v

    async def resolve(self, account: Account, *, version_field: Any = None,
                      model_ref: ModelRef | None = None) -> tuple[Model, Version]:
        """(model, version) for a create body's `version` or a model path; 404 for what the caller
        may not see."""
        if version_field is not None:
            if not isinstance(version_field, str) or not version_field:
                raise InvalidRequest("version", "must be a version id or owner/name[:version]")
            if VERSION_ID.match(version_field):
                v = await self.version(version_field)
                if v is None:
                    raise VersionNotFound(version_field)
                owner, name = v.model.split("/", 1)
                model, live = await self._model_with(owner, name, v.id)
                if not live:
                    self.forget(v.id)  # deleted (perhaps by another router replica)
                if not visible(model, account) or not live:
                    raise VersionNotFound(version_field)
                return model, v
            model_ref = ModelRef.parse(version_field)
        assert model_ref is not None
        if model_ref.version:  # a named version: is it still live (cached for seconds, dropped on delete)
            model, live = await self._model_with(model_ref.owner, model_ref.name, model_ref.version)
        else:
            model, live = await self.registry.get_model(model_ref.owner, model_ref.name), True
        if not visible(model, account):
            raise ModelNotFound(model_ref.model)
        vid = model_ref.version or model.latest_version
        if not vid:
            raise VersionNotFound(f"{model_ref.model} has no versions")
        if not live:
            self.forget(vid)
            raise VersionNotFound(str(model_ref))
        v = await self.version(vid)
        if v is None or v.model != model_ref.model:
            raise VersionNotFound(str(model_ref))
        return model, v

