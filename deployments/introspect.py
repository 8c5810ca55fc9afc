"""Reads a pushed Cog package's schema and traits. Runs as a Ray task in the version's own
runtime_env (user code is never imported into the router)."""

from __future__ import annotations

import os
import tempfile
from typing import Any

from deployments import cog_runtime
from deployments.cog_config import read_cog_config, runtime_env_for
from vendo_core.packaging import UnpackLimits, unpack_package


def introspect_package(package: bytes, limits: UnpackLimits | None = None) -> dict[str, Any]:
    """Unpack, import the predictor, and return its OpenAPI schema, traits and runtime_env."""
    with tempfile.TemporaryDirectory(prefix="vendo-introspect-") as tmp:
        project = unpack_package(package, tmp, limits=limits)
        config = read_cog_config(project)
        cwd = os.getcwd()
        try:
            schema = cog_runtime.openapi_schema(project)
            traits = cog_runtime.predictor_traits(project)
        finally:
            os.chdir(cwd)
        return {"openapi_schema": schema, "traits": traits,
                "runtime_env": runtime_env_for(config)}


def package_runtime_env(package: bytes, limits: UnpackLimits | None = None) -> dict[str, Any]:
    """The Ray runtime_env that a package's cog.yaml asks for (no user code is imported)."""
    with tempfile.TemporaryDirectory(prefix="vendo-config-") as tmp:
        return runtime_env_for(read_cog_config(unpack_package(package, tmp, limits=limits)))
