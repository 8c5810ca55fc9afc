"""Identifiers parsed once at the edge."""

from __future__ import annotations

import base64
import os
import re
from dataclasses import dataclass

from router.errors import InvalidRequest

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


def app_name(version_id: str) -> str:
    """The Serve application that runs a version (reached only through the router)."""
    return f"v-{version_id[:20]}"


def new_prediction_id() -> str:
    return base64.b32encode(os.urandom(20)).decode().lower()[:26]
