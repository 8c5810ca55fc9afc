"""Collections of models from `configs/collections.yaml`, validated strictly so a typo fails loudly
with the file and the field named."""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

DEFAULT_PATH = Path(__file__).resolve().parent.parent / "configs" / "collections.yaml"
_MODEL_REF = re.compile(r"^[a-z0-9][a-z0-9._-]{0,99}/[a-z0-9][a-z0-9._-]{0,99}$", re.IGNORECASE)


class Collection(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    slug: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,99}$")
    name: str = Field(min_length=1)
    description: str
    full_description: str | None = None
    models: tuple[str, ...] = Field(default=(), description="owner/name of each model, in order")

    @field_validator("models")
    @classmethod
    def _refs(cls, refs: tuple[str, ...]) -> tuple[str, ...]:
        for ref in refs:
            if not _MODEL_REF.match(ref):
                raise ValueError(f"expected owner/name, got {ref!r}")
        return refs


class CollectionsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    collections: tuple[Collection, ...] = ()

    @model_validator(mode="after")
    def _unique_slugs(self):
        seen: set[str] = set()
        for c in self.collections:
            if c.slug in seen:
                raise ValueError(f"collection slug {c.slug!r} appears twice")
            seen.add(c.slug)
        return self

    def get(self, slug: str) -> Collection | None:
        return next((c for c in self.collections if c.slug == slug), None)


def load_collections(path: Path | None = None) -> CollectionsConfig:
    """Read and validate a collections file; raises ValueError naming the file and the field."""
    path = Path(path or DEFAULT_PATH)
    try:
        return CollectionsConfig.model_validate(yaml.safe_load(path.read_text()) or {})
    except ValidationError as e:
        raise ValueError(f"{path}: {e}") from e


@lru_cache(maxsize=4)
def collections(path: str | None = None) -> CollectionsConfig:
    return load_collections(Path(path) if path else None)


def collections_for(settings) -> CollectionsConfig:
    """The collections `settings.collections_config` names (default: configs/collections.yaml)."""
    return collections(str(settings.collections_config) if settings.collections_config else None)
