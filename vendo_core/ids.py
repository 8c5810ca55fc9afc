"""Identifiers parsed once at the edge."""

from __future__ import annotations

import base64
import hashlib
import os
import re
from dataclasses import dataclass

from vendo_core.errors import InvalidRequest

_REF = re.compile(r"^(?P<owner>[^/]+)/(?P<name>[^/:]+)(:(?P<version>.+))?$")
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,99}$", re.IGNORECASE)
VERSION_ID = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class ModelRef:
    owner: str
    name: str
    version: str | None = None

    @classmethod
    def parse(cls, text: str, field: str = "version") -> ModelRef:
        m = _REF.match(text or "")
        if not m:
            raise InvalidRequest(field, f"expected owner/name[:version], got {text!r}")
        ref = cls(m["owner"], m["name"], m["version"])
        ref.check_names(field)
        return ref

    def check_names(self, field: str = "model") -> None:
        for part in (self.owner, self.name):
            if not _NAME.match(part):
                raise InvalidRequest(field, f"invalid model name part {part!r}")

    @property
    def model(self) -> str:
        return f"{self.owner}/{self.name}"

    def __str__(self) -> str:
        return self.model + (f":{self.version}" if self.version else "")


VERSION_APP_PREFIX = "v-"
DEPLOYMENT_APP_PREFIX = "d-"


def app_name(version_id: str) -> str:
    """The Serve application that runs a version (reached only through the router)."""
    return f"{VERSION_APP_PREFIX}{version_id[:20]}"


def training_app_name(version_id: str) -> str:
    """The Serve application that runs a version's trainings (its `train` target): reaped, like a
    version's, when idle at zero replicas."""
    return f"{VERSION_APP_PREFIX}{version_id[:20]}-train"


def deployment_app_name(owner: str, name: str) -> str:
    """The Serve application of a named deployment (its own replicas, hardware and instances).
    Names may hold `--`, so a digest of `owner/name` keeps `a--b/c` and `a/b--c` apart."""
    digest = hashlib.sha256(f"{owner}/{name}".encode()).hexdigest()[:12]
    return f"{DEPLOYMENT_APP_PREFIX}{owner}--{name}--{digest}"


def version_id(model: str, package_digest: str) -> str:
    """A version's id: sha256 over its model's `owner/name` and its package's digest, so the same
    package pushed to the same model is the same version, and to another model another one."""
    return hashlib.sha256(f"{model}\n{package_digest}".encode()).hexdigest()


def finetune_version_id(model: str, base_version: str, weights_sha256: str) -> str:
    """A fine-tune's version id: sha256 over its model, its base version's id and its weights'
    digest, so the same training output on the same destination is the same version."""
    return hashlib.sha256(f"{model}\n{base_version}\n{weights_sha256}".encode()).hexdigest()


# what `new_prediction_id` makes (predictions and files): anything else names nothing of ours, and
# never reaches a Redis key
OPAQUE_ID = re.compile(r"^[a-z2-7]{26}$")


def new_prediction_id() -> str:
    return base64.b32encode(os.urandom(20)).decode().lower()[:26]
