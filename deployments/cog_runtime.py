"""Load and run a Cog (0.23.1) project in-process: no HTTP, no coglet, no Ray.

This is the one module callers import; it re-exports the rest. The pieces a replica needs:
`read_cog_config` / `runtime_env_for` (from `cog_config`) for deployment options,
`openapi_schema` / `predictor_traits` (built by `cog_schema`) for a version's metadata, `load` +
`LoadedPredictor.setup` / `asetup` to get a ready predictor, `prepare_input` / `encode_output`
(from `cog_io`) around each call, `metric_scope` (from `cog_metrics`) to collect metrics, and
`raise_in_thread` to cancel a sync prediction.

One process serves one model in production: cog registers the predictor module under its bare
file name (`sys.modules["predict"]`) and relies on the process-wide cwd and `sys.path`. `load`
evicts the previous project's modules so tests (and tools) can still load several in turn.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import ctypes
import dataclasses
import importlib.util
import inspect
import os
import sys
import typing
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import cog
from cog import CancelationException, _inspector
from cog import _adt as adt
from cog.input import FieldInfo
from cog.predictor import extract_setup_weights, has_setup_weights

from deployments import cog_schema
from deployments.cog_config import CogConfig, read_cog_config, runtime_env_for
from deployments.cog_io import PrivateURLRefused, encode_output, prepare_input
from deployments.cog_metrics import CollectedMetrics, PredictionScope, metric_scope
from vendo_core.errors import PackageInvalid

__all__ = [
    "CogConfig",
    "CollectedMetrics",
    "LoadedPredictor",
    "PredictionScope",
    "PrivateURLRefused",
    "encode_output",
    "load",
    "metric_scope",
    "openapi_schema",
    "predictor_traits",
    "prepare_input",
    "raise_in_thread",
    "read_cog_config",
    "runtime_env_for",
]

# ---------------------------------------------------------------------------------------------
# Importing and introspecting user code
# ---------------------------------------------------------------------------------------------

_project_dirs: list[str] = []  # projects whose modules this process has imported


def _enter_project(project_dir: str) -> None:
    # Another project's modules (same bare names: predict, utils, ...) and sys.path entry would
    # shadow this one's, so evict them first.
    for old in [d for d in _project_dirs if d != project_dir]:
        with contextlib.suppress(ValueError):
            sys.path.remove(old)
        prefix = old + os.sep
        for name, module in list(sys.modules.items()):
            if (getattr(module, "__file__", None) or "").startswith(prefix):
                del sys.modules[name]
        _project_dirs.remove(old)
    if project_dir not in _project_dirs:
        _project_dirs.append(project_dir)
    if not sys.path or sys.path[0] != project_dir:
        with contextlib.suppress(ValueError):
            sys.path.remove(project_dir)
        sys.path.insert(0, project_dir)


def _import(project_dir: str, module_file: str) -> Any:
    path = os.path.join(project_dir, module_file)
    name = os.path.basename(module_file)[: -len(".py")]
    sys.modules.pop(name, None)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {module_file}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # cog's create_predictor and pickle look it up by bare name
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


@dataclass
class _Target:
    obj: Any  # class or function named by the ref
    function: Callable  # the unbound run/predict/train function (decorators unwrapped)
    method_name: str
    info: adt.PredictorInfo
    facts: cog_schema.SourceFacts


def _introspect(project_dir: str, ref: str, train: bool, modules: dict[str, Any]) -> _Target:
    module_file, _, name = ref.partition(":")
    module = modules.get(module_file)
    if module is None:
        module = modules[module_file] = _import(project_dir, module_file)
    module_name = os.path.basename(module_file)[: -len(".py")]
    if not name:
        name = "train" if train else ("Runner" if hasattr(module, "Runner") else "Predictor")
    obj = getattr(module, name, None)
    if obj is None:
        raise PackageInvalid(f"{module_file} has no {name!r}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # legacy predict()/BasePredictor names
        if inspect.isclass(obj) and train:
            if not callable(getattr(obj, "train", None)):
                raise PackageInvalid(f"{name} has no train() method")
            # load_predictor_from_ref/create_predictor reject train-only classes (§14.5).
            method = "train"
            function = _inspector._unwrap(obj.train)
            info = _inspector._create_predictor_info(module_name, name, function, "train", True)
        else:
            info = _inspector.create_predictor(module_name, name)
            if inspect.isclass(obj):
                method = "run" if _inspector._user_method_owner(obj, "run") else "predict"
                function = _inspector._unwrap(getattr(obj, method))
            else:
                method, function = name, _inspector._unwrap(obj)
    qualname = function.__qualname__.split(".")
    owner = qualname[-2] if len(qualname) >= 2 else None
    facts = cog_schema.source_facts(function.__code__.co_filename, owner, function.__name__)
    accept = {
        param.name: param.default.accept
        for param in inspect.signature(function).parameters.values()
        if isinstance(param.default, FieldInfo) and param.default.accept is not None
    }
    for pname in accept:  # as Cog's build refuses it (its accept_mime_type_error case)
        field = info.inputs.get(pname)
        if field is not None and field.type.primitive not in (adt.PrimitiveType.PATH, adt.PrimitiveType.FILE):
            raise PackageInvalid(f"input {pname!r}: accept is only valid on Path or File inputs")
    try:
        returned = typing.get_type_hints(function).get("return")
    except Exception:  # noqa: BLE001 - an unresolvable hint: cog's own output type stands
        returned = None
    output_schema = cog_schema.typed_dict_schema(returned) if returned is not None else None
    return _Target(obj, function, method, info,
                   dataclasses.replace(facts, accept=accept, output_schema=output_schema))


@contextlib.contextmanager
def _project(project_dir: str, restore: bool) -> Iterator[None]:
    saved_cwd, saved_path = os.getcwd(), list(sys.path)
    _enter_project(project_dir)
    os.chdir(project_dir)  # setup() and module-level code often open paths relative to the project
    try:
        yield
    finally:
        if restore:
            os.chdir(saved_cwd)
            sys.path[:] = saved_path


def _describe(project_dir: str | os.PathLike) -> tuple[CogConfig, _Target | None, _Target | None]:
    config = read_cog_config(project_dir)
    modules: dict[str, Any] = {}
    with _project(config.project_dir, restore=True):
        try:
            predict = config.predictor_ref and _introspect(config.project_dir, config.predictor_ref, False, modules)
            train = config.train_ref and _introspect(config.project_dir, config.train_ref, True, modules)
        except PackageInvalid:
            raise
        except Exception as exc:
            raise PackageInvalid(f"cannot load the predictor: {type(exc).__name__}: {exc}") from exc
    return config, predict or None, train or None


def _traits(config: CogConfig, target: _Target) -> dict:
    fn = target.function
    raw = getattr(target.obj, target.method_name, fn) if inspect.isclass(target.obj) else target.obj
    is_async = inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn)
    declared = getattr(raw, "__cog_concurrent_max__", None) or getattr(fn, "__cog_concurrent_max__", None)
    kind = target.info.output.kind
    return {
        "method": target.method_name,
        "is_async": is_async,
        "is_iterator": kind in (adt.OutputKind.ITERATOR, adt.OutputKind.CONCAT_ITERATOR),
        # @cog.concurrent wins over the deprecated cog.yaml concurrency.max; coglet refuses more
        # than one slot for a sync predictor, so we never report one.
        "concurrency_max": (declared or config.concurrency_max) if is_async else None,
        "streaming": target.facts.streaming,
        "has_train": config.train_ref is not None,
    }


def openapi_schema(project_dir: str | os.PathLike) -> dict:
    """The version's OpenAPI 3.0.2 document, shaped like cog's (replicate-api.md §14.4).

    Imports the user's module (cwd and sys.path are restored afterwards); raises PackageInvalid.
    """
    _, predict, train = _describe(project_dir)
    return _openapi(predict, train)


def predictor_traits(project_dir: str | os.PathLike) -> dict:
    """How to drive the predictor: method, is_async, is_iterator, concurrency_max, streaming, has_train."""
    config, predict, _ = _describe(project_dir)
    return _predict_traits(config, predict)


def schema_and_traits(project_dir: str | os.PathLike) -> tuple[dict, dict]:
    """`openapi_schema` and `predictor_traits` from one import of the user's module (a push's
    introspection: the module's top-level code runs once, not twice)."""
    config, predict, train = _describe(project_dir)
    return _openapi(predict, train), _predict_traits(config, predict)


def _openapi(predict: _Target | None, train: _Target | None) -> dict:
    return cog_schema.build_openapi(
        predict and (predict.info, predict.facts), train and (train.info, train.facts), cog.__version__
    )


def _predict_traits(config: CogConfig, predict: _Target | None) -> dict:
    if predict is None:
        raise PackageInvalid("cog.yaml has no 'run' or 'predict' entry")
    return _traits(config, predict)


# ---------------------------------------------------------------------------------------------
# Loaded predictors
# ---------------------------------------------------------------------------------------------


@dataclass
class LoadedPredictor:
    """A predictor instance (or function) plus what we learned about it."""

    config: CogConfig
    predictor: Any  # the instance, or the function for function targets
    function: Callable  # what to call with the kwargs from prepare_input
    method_name: str
    info: adt.PredictorInfo
    facts: cog_schema.SourceFacts
    is_async: bool  # needs the event loop: `async def` (returns a coroutine) or async generator
    is_generator: bool  # sync generator function
    is_async_generator: bool
    is_iterator: bool  # Iterator/ConcatenateIterator output (sync or async), however produced
    setup_takes_weights: bool
    setup_is_async: bool
    concurrency_max: int | None
    legacy_optional: frozenset[str]  # `x: T = Input(default=None)`: treated as Optional
    inputs: dict[str, adt.InputField]  # info.inputs with the legacy fields made Optional

    def _start_setup(self, weights: Any) -> Any:
        setup = getattr(self.predictor, "setup", None)
        if not callable(setup):
            return None
        if self.setup_takes_weights:
            return setup(weights if weights is not None else extract_setup_weights(self.predictor))
        return setup()

    def setup(self, weights: Any = None) -> None:
        """Run the user's setup() in this thread.

        An async setup() runs to completion with `asyncio.run` on a fresh loop in the calling
        thread, so it must not be called from a thread with a running loop. Objects that bind to
        a loop (aiohttp sessions, asyncio locks) would then be bound to the wrong one: when the
        predictor is async, prefer `await asetup()` on the loop that will run predictions.
        """
        result = self._start_setup(weights)
        if inspect.isawaitable(result):
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                asyncio.run(_await(result))
                return
            with contextlib.suppress(AttributeError):
                result.close()  # type: ignore[union-attr]
            raise RuntimeError("async setup() called from a running loop; use `await loaded.asetup()`")

    async def asetup(self, executor: concurrent.futures.Executor | None = None, weights: Any = None) -> None:
        """Run setup() for a replica whose loop will run the predictions.

        An async setup() is awaited on the current loop (so loop-bound objects it creates work
        in async predictions, as coglet does); a sync one runs in `executor` (None: the loop's
        default) with the caller's contextvars, so the loop stays free and log routing holds.
        """
        if self.setup_is_async:
            result = self._start_setup(weights)
            if inspect.isawaitable(result):
                await result
            return
        loop = asyncio.get_running_loop()
        context = contextvars.copy_context()
        result = await loop.run_in_executor(executor, context.run, self._start_setup, weights)
        if inspect.isawaitable(result):  # a sync def that returned a coroutine anyway
            await result

    def call(self, kwargs: dict[str, Any]) -> Any:
        """Invoke run/predict; returns a value, generator, coroutine or async generator."""
        return self.function(**kwargs)

    def schema(self) -> dict:
        """The OpenAPI document for the loaded target, without importing again."""
        if self.method_name == "train" and self.config.train_ref:
            return cog_schema.build_openapi(None, (self.info, self.facts), cog.__version__)
        return cog_schema.build_openapi((self.info, self.facts), None, cog.__version__)


async def _await(awaitable: Any) -> Any:
    return await awaitable


def load(project_dir: str | os.PathLike, *, train: bool = False, chdir: bool = True) -> LoadedPredictor:
    """Import the project's predictor (or trainer with `train=True`) and instantiate it.

    Does not run setup(). Leaves cwd at the project (unless chdir=False) and the project on
    sys.path, as cog does; the previous project's modules are evicted. Raises PackageInvalid.
    """
    config = read_cog_config(project_dir)
    ref = config.train_ref if train else config.predictor_ref
    if ref is None:
        raise PackageInvalid("cog.yaml has no 'train' entry" if train else "cog.yaml has no 'run' or 'predict'")
    with _project(config.project_dir, restore=not chdir):
        try:
            target = _introspect(config.project_dir, ref, train, {})
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                predictor = target.obj() if inspect.isclass(target.obj) else target.obj
        except PackageInvalid:
            raise
        except Exception as exc:
            raise PackageInvalid(f"cannot load the predictor: {type(exc).__name__}: {exc}") from exc
    function = getattr(predictor, target.method_name) if inspect.isclass(target.obj) else predictor
    fn = target.function
    setup = getattr(target.obj, "setup", None) if inspect.isclass(target.obj) else None
    legacy = cog_schema.legacy_optional(target.info, target.facts)
    traits = _traits(config, target)
    return LoadedPredictor(
        config=config,
        predictor=predictor,
        function=function,
        method_name=target.method_name,
        info=target.info,
        facts=target.facts,
        is_async=traits["is_async"],
        is_generator=inspect.isgeneratorfunction(fn),
        is_async_generator=inspect.isasyncgenfunction(fn),
        is_iterator=traits["is_iterator"],
        setup_takes_weights=setup is not None and has_setup_weights(predictor),
        setup_is_async=setup is not None and inspect.iscoroutinefunction(_inspector._unwrap(setup)),
        concurrency_max=traits["concurrency_max"],
        legacy_optional=legacy,
        inputs=_relax(target.info.inputs, legacy),
    )


def _relax(inputs: dict[str, adt.InputField], names: frozenset[str]) -> dict[str, adt.InputField]:
    relaxed = dict(inputs)
    for name in names:
        ft = inputs[name].type
        rep = adt.Repetition.OPTIONAL if ft.repetition is adt.Repetition.REQUIRED else adt.Repetition.OPTIONAL_REPEATED
        relaxed[name] = dataclasses.replace(inputs[name], type=dataclasses.replace(ft, repetition=rep))
    return relaxed


def raise_in_thread(thread_ident: int, exc_type: type[BaseException] = CancelationException) -> bool:
    """Raise `exc_type` asynchronously in another Python thread (how coglet cancels sync runs).

    Fires at the thread's next bytecode, so a long C/CUDA call delays it. Returns False when
    no thread has that ident (it already finished).
    """
    hit = ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_ident), ctypes.py_object(exc_type))
    if hit > 1:  # should not happen; undo rather than hit several threads
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_ident), None)
        raise SystemError("PyThreadState_SetAsyncExc affected more than one thread")
    return hit == 1
