"""cog.yaml: the keys that matter when a Cog project runs in-process (replicate-api.md §14.2)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from vendo_core.errors import PackageInvalid

_LOCAL_PREFIXES = ("./", "../", "/")  # a requirement that is a path, as pip reads it
_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass
class CogConfig:
    """The cog.yaml keys that matter when running in-process (see replicate-api.md §14.2)."""

    project_dir: str
    predictor_ref: str | None  # "predict.py:Predictor"; the class part may be omitted
    method_key: str | None  # which cog.yaml key held it: "run" or "predict"
    train_ref: str | None = None
    python_version: str | None = None
    python_packages: list[str] = field(default_factory=list)
    python_requirements: list[str] = field(default_factory=list)
    # requirements.txt lines naming a file or folder of the project (`./dist/pkg-0.1.0.tar.gz`):
    # installed by the model's worker, in its sandbox, before setup (they may run a setup.py)
    local_requirements: list[str] = field(default_factory=list)
    environment: dict[str, str] = field(default_factory=dict)
    gpu: bool = False
    concurrency_max: int | None = None


def _ref(raw: dict, key: str, project_dir: str) -> str | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise PackageInvalid(f"cog.yaml: {key!r} must be a string like 'predict.py:Predictor'")
    module_file = value.partition(":")[0]
    path = _inside(project_dir, module_file)
    if not module_file.endswith(".py") or path is None:
        raise PackageInvalid(f"cog.yaml: {key!r} must name a .py file inside the project: {value!r}")
    if not os.path.isfile(path):
        raise PackageInvalid(f"cog.yaml: {key!r} refers to a missing file: {module_file}")
    return value


def _inside(project_dir: str, relative: str) -> str | None:
    """The path `relative` names inside the project, or None when it leads outside. Lexical: a
    package never holds a link leading outside itself (packaging refuses it at pack and at
    unpack), and a model worker sees its project through links to the package's files."""
    base = os.path.normpath(project_dir)
    path = os.path.normpath(os.path.join(base, relative))
    return path if path.startswith(base + os.sep) else None


def read_cog_config(project_dir: str | os.PathLike) -> CogConfig:
    """Parse `<project_dir>/cog.yaml`; raise PackageInvalid on anything we cannot serve."""
    project_dir = os.path.abspath(project_dir)
    path = os.path.join(project_dir, "cog.yaml")
    try:
        with open(path, encoding="utf-8") as fh:
            raw = yaml.safe_load(fh)
    except FileNotFoundError:
        raise PackageInvalid("cog.yaml not found at the project root") from None
    except (OSError, yaml.YAMLError) as exc:
        raise PackageInvalid(f"cog.yaml cannot be read: {exc}") from None
    if not isinstance(raw, dict):
        raise PackageInvalid("cog.yaml must be a mapping")

    run, predict = _ref(raw, "run", project_dir), _ref(raw, "predict", project_dir)
    if run and predict:
        raise PackageInvalid("cog.yaml: set either 'run' or 'predict', not both")
    train = _ref(raw, "train", project_dir)
    if not (run or predict or train):
        raise PackageInvalid("cog.yaml: no 'run', 'predict' or 'train' entry")

    build = raw.get("build") or {}
    if not isinstance(build, dict):
        raise PackageInvalid("cog.yaml: 'build' must be a mapping")
    packages = build.get("python_packages") or []
    if not isinstance(packages, list) or not all(isinstance(p, str) for p in packages):
        raise PackageInvalid("cog.yaml: build.python_packages must be a list of strings")
    requirements: list[str] = []
    if build.get("python_requirements"):
        if packages:
            raise PackageInvalid("cog.yaml: use build.python_requirements or python_packages, not both")
        req_path = _inside(project_dir, str(build["python_requirements"]))
        if req_path is None:
            raise PackageInvalid("cog.yaml: build.python_requirements must be inside the project")
        try:
            with open(req_path, encoding="utf-8") as fh:
                lines = [line.split(" #", 1)[0].strip() for line in fh]
        except OSError as exc:
            raise PackageInvalid(f"cog.yaml: cannot read build.python_requirements: {exc}") from None
        requirements = [line for line in lines if line and not line.startswith("#")]
    local = [line for line in requirements if line.startswith(_LOCAL_PREFIXES)]
    requirements = [line for line in requirements if line not in local]
    for line in local:
        target = _inside(project_dir, line)
        if target is None or not os.path.exists(target):
            raise PackageInvalid(f"cog.yaml: build.python_requirements names {line!r}, which is not a "
                                 "file or folder inside the project")

    environment = _environment(raw.get("environment"))
    concurrency = raw.get("concurrency") or {}
    concurrency_max = concurrency.get("max") if isinstance(concurrency, dict) else None
    if concurrency_max is not None and (
        isinstance(concurrency_max, bool) or not isinstance(concurrency_max, int) or concurrency_max < 1
    ):
        raise PackageInvalid("cog.yaml: concurrency.max must be a positive integer")
    python_version = build.get("python_version")
    if isinstance(python_version, str):  # unquoted 3.10 is YAML's float 3.1: not judged
        _check_python_version(python_version)
    if bool(build.get("gpu", False)):
        _check_torch_pinned([*packages, *requirements])
    return CogConfig(
        project_dir=project_dir,
        predictor_ref=run or predict,
        method_key="run" if run else ("predict" if predict else None),
        train_ref=train,
        python_version=None if python_version is None else str(python_version),
        python_packages=list(packages),
        python_requirements=requirements,
        local_requirements=local,
        environment=environment,
        gpu=bool(build.get("gpu", False)),
        concurrency_max=concurrency_max,
    )


def _check_python_version(version: str) -> None:
    """Cog's rule: Python 3.10 or newer. (The model runs on the worker's interpreter, whatever
    minor version the project names.)"""
    m = re.fullmatch(r"(\d+)\.(\d+)(?:\.\d+)?", version.strip())
    if not m:
        raise PackageInvalid(f'cog.yaml: invalid build.python_version "{version}": expected e.g. "3.12"')
    if (int(m.group(1)), int(m.group(2))) < (3, 10):
        raise PackageInvalid(f'invalid build.python_version "{version}": minimum supported Python version is 3.10')


def _check_torch_pinned(requirements: list[str]) -> None:
    """Cog's rule for GPU models: torch must name its version, or the build cannot choose the
    CUDA it goes with (and an unpinned torch pulls whatever build the index has)."""
    for line in requirements:
        if re.fullmatch(r"torch(\[[^\]]*\])?", line.strip(), re.IGNORECASE):
            raise PackageInvalid("cog.yaml: torch version must be specified when using CUDA (gpu: true); "
                                 "pin it, e.g. torch==2.5.1")


def _environment(raw: Any) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, list):
        raise PackageInvalid("cog.yaml: 'environment' must be a list of 'NAME=value' strings")
    env: dict[str, str] = {}
    for item in raw:
        key, sep, value = str(item).partition("=")
        if not sep or not _ENV_KEY.match(key):
            raise PackageInvalid(f"cog.yaml: invalid environment entry {item!r}; expected NAME=value")
        env[key] = value
    return env


def runtime_env_for(config: CogConfig) -> dict:
    """Ray `runtime_env` pieces for a project: pip requirements and environment variables."""
    runtime_env: dict[str, Any] = {}
    pip = [*config.python_packages, *config.python_requirements]
    if pip:
        runtime_env["pip"] = pip
    if config.environment:
        runtime_env["env_vars"] = dict(config.environment)
    return runtime_env
