"""Reads a pushed Cog package's schema and traits. Runs as a Ray task in the version's own
runtime_env; the model's code is imported only in a model worker process that this task starts
(`deployments.supervisor.introspect`), never in the task itself or the router."""

from __future__ import annotations

import asyncio
import tempfile
from typing import Any

from deployments import supervisor
from deployments.cog_config import read_cog_config, runtime_env_for
from deployments.supervisor import WorkerOptions, share_tree
from vendo_core.packaging import UnpackLimits, unpack_package


def introspect_package(package: bytes, limits: UnpackLimits | None = None,
                       options: WorkerOptions | None = None, timeout_s: float = 300.0) -> dict[str, Any]:
    """Unpack, have a worker import the predictor, and return its OpenAPI schema, traits and
    runtime_env. Raises PackageInvalid."""
    with tempfile.TemporaryDirectory(prefix="vendo-introspect-") as tmp:
        project = unpack_package(package, tmp, limits=limits)
        share_tree(tmp)
        info = asyncio.run(supervisor.introspect(project, options or WorkerOptions(), timeout_s))
        return {**info, "runtime_env": runtime_env_for(read_cog_config(project)), "readme": read_readme(project)}


README_MAX_BYTES = 256 * 1024


def read_readme(project) -> str | None:
    """The project's README.md (any case), as text, cut at README_MAX_BYTES; None without one.
    A link is never followed: a README that is one is not read."""
    from pathlib import Path

    for entry in sorted(Path(project).iterdir()):
        if entry.name.lower() == "readme.md" and entry.is_file() and not entry.is_symlink():
            with entry.open("rb") as f:
                return f.read(README_MAX_BYTES).decode("utf-8", "replace")
    return None


def package_runtime_env(package: bytes, limits: UnpackLimits | None = None) -> dict[str, Any]:
    """The Ray runtime_env that a package's cog.yaml asks for (no user code is imported)."""
    with tempfile.TemporaryDirectory(prefix="vendo-config-") as tmp:
        return runtime_env_for(read_cog_config(unpack_package(package, tmp, limits=limits)))
