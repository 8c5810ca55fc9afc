"""The parent side of a model worker (`deployments.worker`): start it without credentials, speak
to it in JSON frames, restart it when it dies, and take its output files without trusting them.

The parent is vendo code and keeps what the worker must never reach (Redis, storage, Ray). The
worker gets:
- an environment built from an allow-list (no `VENDO_*`, no Redis, S3 or Ray variables; names in
  `VENDO_WORKER_ENV` are added by the operator's choice), with its own HOME and TMPDIR;
- when vendo runs as root, an unprivileged uid and gid (`VENDO_WORKER_UID`/`_GID`, 65534 by
  default) and no supplementary groups, so it cannot read the data directory, `~/.ray`, or its
  parent's `/proc/<pid>/environ`. When that is not possible (vendo is not root, or the
  interpreter is not readable by that uid) the worker runs as vendo's own user and `isolation`
  says "partial" and why; `vendo status` shows it.

A worker that exits while predictions run (a segfault, `os._exit`, the kernel's OOM killer, or
our own kill after it ignored a cancel) fails those predictions with a message that says so, and
a new worker is started, with setup() run again, for the next ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import shutil
import signal
import stat
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deployments.cog_config import read_cog_config
from deployments.protocol import ProtocolError, encode, read_frame
from vendo_core.errors import PackageInvalid

log = logging.getLogger("vendo.worker")

NOBODY = 65534
# what a worker's environment may carry over from the replica's (plus VENDO_WORKER_ENV)
PASS_ENV = ("PATH", "LANG", "LANGUAGE", "TZ", "TERM", "LD_LIBRARY_PATH",
            "CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES", "NVIDIA_DRIVER_CAPABILITIES",
            "HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
            "SSL_CERT_FILE", "SSL_CERT_DIR")
PASS_PREFIXES = ("LC_",)
# variables a process reads as it starts (the interpreter, the dynamic linker, the C library's
# locale and clock): a model that sets one in cog.yaml gets an interpreter started with it, not a
# prestarted one told of it afterwards
READ_AT_START = ("PYTHON", "LD_", "LC_", "LANG", "TZ", "MALLOC_", "GLIBC_")


@dataclass(frozen=True)
class WorkerOptions:
    """How workers are started; plain data, so it travels to Serve replicas and Ray tasks."""

    python: str | None = None  # None: the interpreter vendo runs on
    uid: int = NOBODY  # used only when vendo runs as root
    gid: int = NOBODY
    env: tuple[str, ...] = ()  # extra variable names passed through
    kill_grace_s: float = 5.0
    install_timeout_s: float = 600.0  # pip installing a project's own artifacts
    allow_private_urls: bool = False
    fetch_limits: tuple[int, float] = (1 << 30, 300.0)
    gpu_fraction: float = 0.0

    @classmethod
    def of(cls, settings: Any, **overrides: Any) -> WorkerOptions:
        env = tuple(n.strip() for n in (settings.worker_env or "").split(",") if n.strip())
        return dataclasses.replace(cls(
            python=settings.worker_python, uid=settings.worker_uid, gid=settings.worker_gid, env=env,
            kill_grace_s=settings.worker_kill_grace_s, allow_private_urls=settings.allow_private_urls,
            fetch_limits=(settings.max_input_download_bytes, settings.input_download_timeout_s)),
            **overrides)


@dataclass(frozen=True)
class Isolation:
    level: str  # "full" | "partial"
    reason: str = ""
    uid: int | None = None
    gid: int | None = None


def plan_isolation(options: WorkerOptions) -> Isolation:
    if os.geteuid() != 0:
        return Isolation("partial", "vendo does not run as root, so model code runs as vendo's own "
                         "user and can read what that user can (its files, ~/.ray)")
    return Isolation("full", uid=options.uid, gid=options.gid)


def _python_path() -> str:
    """The replica's import path minus its standard library, for the worker's PYTHONPATH (the
    worker's interpreter brings its own; the venv's packages and vendo's code come from here)."""
    stdlib = {os.path.realpath(p) for p in (sysconfig.get_path("stdlib"), sysconfig.get_path("platstdlib")) if p}
    # vendo's own packages first (an editable install finds them with a hook, not a path entry)
    keep: list[str] = [str(Path(__file__).resolve().parent.parent)]
    for entry in sys.path:
        if not entry or entry.endswith(".zip") or not os.path.isdir(entry):
            continue
        real = os.path.realpath(entry)
        if any(real == s or real.startswith(s + os.sep) for s in stdlib) and "-packages" not in real:
            continue
        if entry not in keep:
            keep.append(entry)
    return os.pathsep.join(keep)


def worker_env(options: WorkerOptions, home: str, tmp: str, model_env: dict[str, str] | None = None) -> dict[str, str]:
    """The allow-listed part of our environment, the model's own (cog.yaml `environment`), and
    the worker's HOME, TMPDIR and import path."""
    env = {k: v for k, v in os.environ.items()
           if k in PASS_ENV or k.startswith(PASS_PREFIXES) or k in options.env}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env.update(model_env or {})
    env.update(HOME=home, TMPDIR=tmp, PYTHONPATH=_python_path(), PYTHONUNBUFFERED="1",
               PYTHONDONTWRITEBYTECODE="1", PYTHONNOUSERSITE="1")
    return env


def remove_dir(path: Path) -> None:
    """Remove a folder and what is in it, if it is there: one `rmdir` when it is empty (the
    common case, a prediction that wrote no file), `shutil.rmtree` otherwise."""
    try:
        os.rmdir(path)
    except FileNotFoundError:
        pass
    except OSError:
        shutil.rmtree(path, ignore_errors=True)


class WorkerRoot:
    """A worker's own directories: HOME and TMPDIR (the worker's), and per-prediction input and
    output folders (made by the parent, so the worker cannot swap them for links)."""

    def __init__(self, isolation: Isolation, prefix: str = "vendo-worker-"):
        self.isolation = isolation
        self.path = Path(tempfile.mkdtemp(prefix=prefix))
        os.chmod(self.path, 0o755)
        self.home = self._private("home")
        self.tmp = self._private("tmp")
        for sub in ("in", "out"):
            (self.path / sub).mkdir(mode=0o755)

    def _give(self, path: Path | int) -> None:
        if self.isolation.uid is not None:
            os.chown(path, self.isolation.uid, self.isolation.gid)

    def _private(self, name: str) -> Path:
        p = self.path / name
        p.mkdir(mode=0o700)
        self._give(p)
        return p

    def workdir(self, project: Path) -> Path:
        """The worker's working directory: the project's folders, made anew and the worker's
        own, holding links to the project's files. Model code writes next to its files, as in a
        Cog container's /src; the package itself, shared by every replica, stays read-only."""
        src = self.path / "src"
        if src.exists():
            return src
        for root, dirs, files in os.walk(project):
            rel = os.path.relpath(root, project)
            here = src if rel == "." else src / rel
            here.mkdir(mode=0o755)
            self._give(here)
            for name in files + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
                os.symlink(os.path.join(root, name), here / name)
        return src

    def bin(self, python: str) -> Path:
        """A folder for the front of the worker's PATH where `python` and `python3` are the
        worker's interpreter, as a virtualenv's bin is (model code runs `python script.py`)."""
        b = self.path / "bin"
        if not b.exists():
            b.mkdir(mode=0o755)
            for name in ("python", "python3"):
                os.symlink(python, b / name)
        return b

    def output_dir(self, pid: str) -> tuple[Path, int]:
        """A fresh folder the worker writes one prediction's files into, and our descriptor of it."""
        p = self.path / "out" / _safe(pid)
        try:
            p.mkdir(mode=0o700)
        except FileExistsError:  # left by a replica that died mid-prediction
            remove_dir(p)
            p.mkdir(mode=0o700)
        fd = os.open(p, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        self._give(fd)
        return p, fd

    def input_dir(self, pid: str) -> Path:
        p = self.path / "in" / _safe(pid)
        remove_dir(p)
        p.mkdir(mode=0o755)
        return p

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def share_tree(path: str | os.PathLike) -> None:
    """Let a worker (another uid) read, not write, the files the parent placed under `path`."""
    for root, _dirs, files in os.walk(path):
        os.chmod(root, 0o755)
        for f in files:
            full = os.path.join(root, f)
            if not os.path.islink(full):
                os.chmod(full, os.stat(full).st_mode & 0o755 | 0o444)


def closed_to_others(path: Path) -> str | None:
    """The first folder on the way to `path` that other users cannot pass through, if any."""
    for folder in [*reversed(path.resolve().parents), path.resolve()]:
        try:
            if not os.stat(folder).st_mode & 0o001:
                return str(folder)
        except OSError:
            return str(folder)
    return None


def _safe(pid: str) -> str:
    name = "".join(c for c in pid if c.isalnum() or c in "-_")[:64]
    return name or "x"


def open_output(dir_fd: int, name: str) -> int:
    """Open a file the worker placed in an output folder: a plain name, not a link, a regular
    file. Raises ValueError for anything else (a worker pointing us at files it cannot read)."""
    if not name or "/" in name or name in (".", "..") or "\0" in name:
        raise ValueError(f"bad output file name {name!r}")
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ValueError(f"output {name!r} is not a regular file")
    return fd


class WorkerFailed(Exception):
    """The prediction failed in the worker (its own exception, or the worker died)."""

    def __init__(self, error: str, *, canceled: bool = False, crashed: bool = False):
        super().__init__(error)
        self.error = error
        self.canceled = canceled
        self.crashed = crashed


def describe_exit(returncode: int | None, killed_by_us: bool) -> str:
    if killed_by_us:
        return "the model's worker process was stopped after it did not stop when asked"
    if returncode is None:
        return "the model's worker process stopped answering"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        hint = " (out of memory?)" if -returncode == signal.SIGKILL else ""
        return f"the model's worker process died from {name}{hint}"
    return f"the model's worker process exited unexpectedly with code {returncode}"


OnEvent = Callable[[dict[str, Any]], Awaitable[None]]


class _Proc:
    """One started worker process and what it is doing."""

    def __init__(self, proc: subprocess.Popen, writer: asyncio.WriteTransport, setup_logs: list[str]):
        self.proc = proc
        self.writer = writer  # buffered: a worker that stops reading never blocks our loop
        self.setup_logs = setup_logs  # what it prints before it is ready
        self.env: dict[str, str] = {}  # a prestarted one's environment
        self.calls: dict[str | None, asyncio.Queue] = {}
        self.killed_by_us = False
        self.serving = False  # setup succeeded: a death from here on is restarted
        self.exited = asyncio.Event()
        self.frames = 0  # frames read from it


class ModelWorker:
    """One replica's worker: `start()` runs setup, `predict()` runs one prediction, `cancel()`
    asks it to stop. Restarts the worker (and setup) after it dies."""

    def __init__(self, project: Path | None, options: WorkerOptions, *, mode: str = "predict",
                 on_setup: Callable[[dict[str, Any]], Awaitable[None]] | None = None,
                 env: dict[str, str] | None = None, born: float | None = None):
        # None until the package is unpacked: `prestart()` needs no project, `start()` does
        self.project = Path(project) if project is not None else None
        self.options = options
        self.mode = mode
        self.extra_env = dict(env or {})  # the platform's own variables (a fine-tune's COG_WEIGHTS)
        self.on_setup = on_setup
        self.isolation = plan_isolation(options)
        self.root = WorkerRoot(self.isolation)
        self.current: _Proc | None = None
        self.ready = asyncio.Event()
        born = time.time() if born is None else born
        # (start, end) of its latest setup(): what a prediction that came meanwhile waited through
        self.setup_window = (born, born)
        self.setup_error: str | None = None
        self.setup_logs = ""
        self.restarts = 0
        self.traits: dict[str, Any] = {}
        self.closing = False
        self._site_installed = False
        self._tasks: set[asyncio.Task] = set()
        self._early: _Proc | None = None  # a prestarted interpreter waiting for its project

    # life cycle

    async def prestart(self) -> None:
        """Start the worker's interpreter now, before the project is known: it imports Cog and
        vendo's worker while the replica imports its own side and fetches the package, and
        `start()` then only tells it the project. Best effort: `start()` starts one the usual way
        when this could not, or when the project needs an interpreter started with its own
        environment (a `READ_AT_START` variable in cog.yaml, or artifacts of its own to install)."""
        env = self._env()
        try:
            p = await self._launch_unprivileged(self.python, env, self.root.home, [])
        except OSError as e:
            log.warning("could not prestart the model's worker (%s); starting it once the package is here", e)
            return
        p.env = env
        self._early = p

    async def start(self) -> None:
        """Start a worker and run setup(); afterwards `setup_error` says whether it failed."""
        self.ready.clear()
        started = time.time()
        logs: list[str] = []
        error = None
        try:
            p = await self._adopt(logs) or await self._spawn(logs)
            try:
                msg = await self._await_setup(p)
            except _WorkerGone as e:
                if not _died_unborn(p):
                    raise
                # killed by a signal before it said a word: the fork itself went wrong (a threaded
                # parent's fork handlers can abort the child), not the model. Once more.
                log.warning("model worker died before it started (%s); starting it again", e)
                logs.clear()
                p = await self._spawn(logs)
                msg = await self._await_setup(p)
            if msg.get("ev") == "setup_failed":
                error = str(msg.get("error") or "setup failed")
            else:
                p.serving = True
                traits = msg.get("traits")
                self.traits = traits if isinstance(traits, dict) else {}
        except _WorkerGone as e:
            tail = "".join(logs).strip()[-1000:]
            error = f"{e}: {tail}" if tail else str(e)
        except (OSError, ProtocolError) as e:
            error = f"could not start the model's worker process: {e}"
        except PackageInvalid as e:
            error = str(e)
        self.setup_error = error
        self.setup_logs = "".join(logs)
        if error and self.current is not None:
            self._stop(self.current)  # a failed setup fails predictions here; nothing to keep
        self.setup_window = (started, time.time())
        self.ready.set()
        if self.on_setup is not None:
            await self.on_setup({
                "setup_status": "failed" if error else "succeeded",
                "setup_error": error or "",
                "setup_logs": self.setup_logs[-20000:],
                "setup_time": round(time.time() - started, 3),
                "setup_completed_at": round(time.time(), 6),
                "isolation": self.isolation.level,
                "isolation_reason": self.isolation.reason,
            })

    def fail(self, error: str) -> None:
        """setup() cannot run (the package could not be unpacked): predictions fail with `error`."""
        if self._early is not None:
            self._stop(self._early)
            self._early = None
        self.setup_error = error
        self.ready.set()

    @property
    def python(self) -> str:
        """The worker's interpreter."""
        return self.options.python or sys.executable

    def _env(self, model_env: dict[str, str] | None = None, extra: dict[str, str] | None = None) -> dict[str, str]:
        """The worker's environment: `worker_env` with the model's own variables, the platform's
        (`extra`), and the worker's `bin` (its `python`) first on PATH."""
        env = worker_env(self.options, str(self.root.home), str(self.root.tmp), model_env)
        env.update(extra or {})
        env["PATH"] = str(self.root.bin(self.python)) + os.pathsep + env["PATH"]
        return env

    def _project_env(self) -> tuple[Any, dict[str, str]]:
        """The project's cog.yaml (None when it cannot be read: the worker reports what is wrong)
        and the worker's whole environment for it."""
        assert self.project is not None, "start() needs the project"
        try:
            config = read_cog_config(self.project)
        except (OSError, PackageInvalid):
            config = None
        return config, self._env(config.environment if config else None, self.extra_env)

    async def _adopt(self, setup_logs: list[str]) -> _Proc | None:
        """The prestarted interpreter, told its project, when there is one that can run it; its
        setup logs are collected into `setup_logs` from here on. None: start one the usual way."""
        p, self._early = self._early, None
        if p is None:
            return None
        config, env = self._project_env()
        usable = (config is not None and not config.local_requirements and not p.exited.is_set()
                  and not any(k.startswith(READ_AT_START) for k in config.environment)
                  and not (self.isolation.uid is not None and closed_to_others(self.project)))
        if not usable:
            self._stop(p)
            return None
        src = self.root.workdir(self.project)
        setup_logs.extend(p.setup_logs)
        p.setup_logs = setup_logs
        self._send(p, {**self._init_message(src), "cwd": str(src),
                       "env": {k: v for k, v in env.items() if p.env.get(k) != v}})
        return p

    def _init_message(self, src: Path) -> dict[str, Any]:
        return {"op": "init", "mode": self.mode, "project": str(src), "gpu_fraction": self.options.gpu_fraction,
                "allow_private_urls": self.options.allow_private_urls,
                "fetch_limits": list(self.options.fetch_limits)}

    async def _spawn(self, setup_logs: list[str]) -> _Proc:
        python = self.python
        closed = closed_to_others(self.project) if self.isolation.uid is not None else None
        config, env = self._project_env()
        src = self.root.workdir(self.project)
        if config is not None and config.local_requirements:
            site = await self._install_local(python, config.local_requirements, env, setup_logs)
            env["PYTHONPATH"] = site + os.pathsep + env["PYTHONPATH"]
        p = await self._launch_unprivileged(python, env, src, setup_logs)
        if closed and self.isolation.uid is not None:
            self._stop(p)
            raise OSError(f"the model's files at {self.project} cannot be reached by uid {self.isolation.uid}: "
                          f"{closed} is closed to other users (keep VENDO_PACKAGE_CACHE_DIR outside "
                          "the data directory)")
        self._send(p, self._init_message(src))
        return p

    async def _launch_unprivileged(self, python: str, env: dict[str, str], cwd: Path,
                                   setup_logs: list[str]) -> _Proc:
        """`_launch` as the worker's uid; as vendo's own user, with isolation marked partial and
        why, when the interpreter (or a folder above it) cannot be run by that uid."""
        iso = self.isolation
        if iso.uid is None:
            return await self._launch(python, env, cwd, {}, setup_logs)
        try:
            return await self._launch(python, env, cwd, {"user": iso.uid, "group": iso.gid, "extra_groups": []},
                                      setup_logs)
        except PermissionError as e:
            self.isolation = Isolation(
                "partial", f"the worker interpreter {python} cannot be run as uid {iso.uid} ({e.strerror}); "
                "set VENDO_WORKER_PYTHON to one that can, so model code runs unprivileged")
            log.warning("model worker isolation is partial: %s", self.isolation.reason)
            self.root.isolation = self.isolation
            return await self._launch(python, env, cwd, {}, setup_logs)

    async def _launch(self, python: str, env: dict[str, str], cwd: Path, kwargs: dict[str, Any],
                      setup_logs: list[str]) -> _Proc:
        """Start a worker process and its readers; it waits for its init frame. Becomes `current`."""
        r_in, w_in = os.pipe()
        r_out, w_out = os.pipe()
        try:
            try:
                proc = await self._exec(python, r_in, w_out, env, cwd, kwargs)
            except BaseException:
                os.close(r_out)
                os.close(w_in)
                raise
        finally:
            os.close(r_in)
            os.close(w_out)
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=1 << 20)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(r_out, "rb", 0))
        writer, _ = await loop.connect_write_pipe(asyncio.Protocol, os.fdopen(w_in, "wb", 0))
        p = _Proc(proc, writer, setup_logs)
        p.calls[None] = asyncio.Queue()
        self.current = p
        self._spawn_task(self._read_frames(p, reader))
        for pipe in (proc.stdout, proc.stderr):
            stream = asyncio.StreamReader()
            await loop.connect_read_pipe(lambda s=stream: asyncio.StreamReaderProtocol(s), pipe)
            self._spawn_task(self._read_stream(p, stream))
        return p

    async def _install_local(self, python: str, requirements: list[str], env: dict[str, str],
                             setup_logs: list[str]) -> str:
        """Install the project's own artifacts (requirements.txt lines naming its files, as Cog's
        build does) into this worker's folder, once, as the worker's user: building an sdist runs
        its setup.py, which is model code. Returns the folder for the worker's import path."""
        site = self.root.path / "site"
        if self._site_installed:
            return str(site)
        if not site.exists():
            self.root._private("site")
        argv = [python, "-s", "-m", "pip", "install", "--no-input", "--disable-pip-version-check",
                "--no-warn-script-location", "--target", str(site),
                *(str(self.project / r) for r in requirements)]
        iso = self.isolation
        user = {"user": iso.uid, "group": iso.gid, "extra_groups": []} if iso.uid is not None else {}

        def run(kwargs: dict) -> subprocess.CompletedProcess:
            return subprocess.run(argv, env=env, cwd=str(self.project), capture_output=True, text=True,
                                  timeout=self.options.install_timeout_s, start_new_session=True,
                                  stdin=subprocess.DEVNULL, umask=0o077, **kwargs)

        try:
            try:
                done = await asyncio.to_thread(run, user)
            except PermissionError:
                if not user:
                    raise
                done = await asyncio.to_thread(run, {})  # _exec says why isolation is partial
        except subprocess.TimeoutExpired:
            raise PackageInvalid(f"installing {', '.join(requirements)} took longer than "
                                 f"{self.options.install_timeout_s:g}s") from None
        setup_logs.append(done.stdout + done.stderr)
        if done.returncode != 0:
            raise PackageInvalid(f"installing {', '.join(requirements)} failed: "
                                 f"{(done.stderr or done.stdout).strip()[-1500:]}")
        self._site_installed = True
        return str(site)

    async def _exec(self, python: str, r_in: int, w_out: int, env: dict, cwd: Path,
                    kwargs: dict) -> subprocess.Popen:
        # Popen, not the loop's subprocess support: uvloop (Ray's loop) cannot drop privileges
        return subprocess.Popen(
            [python, "-s", "-m", "deployments.worker", str(r_in), str(w_out)],
            pass_fds=(r_in, w_out), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, env=env, cwd=str(cwd), start_new_session=True,
            umask=0o077, **kwargs)

    async def _await_setup(self, p: _Proc) -> dict[str, Any]:
        q = p.calls[None]
        while True:
            msg = await q.get()
            if msg.get("ev") in ("ready", "setup_failed"):
                return msg
            if msg.get("ev") == "gone":
                raise _WorkerGone(f"{msg['error']} during setup")

    def _spawn_task(self, coro: Awaitable[None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _read_frames(self, p: _Proc, reader: asyncio.StreamReader) -> None:
        try:
            while (msg := await read_frame(reader)) is not None:
                p.frames += 1
                self._dispatch(p, msg)
        except (ProtocolError, ValueError) as e:
            log.warning("model worker sent a bad frame (%s); stopping it", e)
        except asyncio.CancelledError:
            raise
        await self._exited(p)

    async def _read_stream(self, p: _Proc, stream: asyncio.StreamReader) -> None:
        """Output written to the worker's file descriptors 1 and 2 (native code, subprocesses)."""
        while chunk := await stream.read(65536):
            text = chunk.decode(errors="replace")
            running = [k for k in p.calls if k is not None]
            if len(running) == 1:
                self._dispatch(p, {"ev": "log", "id": running[0], "text": text})
            elif not self.ready.is_set():
                p.setup_logs.append(text)
            else:
                log.info("model worker: %s", text.rstrip())

    def _dispatch(self, p: _Proc, msg: dict[str, Any]) -> None:
        pid = msg.get("id")
        if pid is None and msg.get("ev") == "log":
            if not self.ready.is_set():
                p.setup_logs.append(str(msg.get("text") or ""))
            else:
                log.info("model worker: %s", str(msg.get("text") or "").rstrip())
            return
        q = p.calls.get(pid if isinstance(pid, str) else None)
        if q is not None:
            q.put_nowait(msg)

    async def _exited(self, p: _Proc) -> None:
        p.writer.close()
        try:
            await asyncio.wait_for(asyncio.to_thread(p.proc.wait), 5)
        except TimeoutError:  # it closed its pipe but lives on: it is of no use to us
            self._kill(p)
            await asyncio.to_thread(p.proc.wait)
        p.exited.set()
        error = describe_exit(p.proc.returncode, p.killed_by_us)
        for q in p.calls.values():
            q.put_nowait({"ev": "gone", "error": error})
        if self.current is p and p.serving and not self.closing:
            log.warning("%s; starting a new one", error)
            self.current = None
            self.restarts += 1
            self.ready.clear()
            self._spawn_task(self.start())

    # predictions

    async def predict(self, pid: str, payload: dict[str, Any], files: dict[str, str], out_dir: Path,
                      on_event: OnEvent) -> dict[str, Any]:
        """Run one prediction; `on_event` sees its `log` and `item` frames in order. Returns the
        `done` frame; raises WorkerFailed."""
        while True:
            await self.ready.wait()
            if self.setup_error:
                raise WorkerFailed(f"setup failed: {self.setup_error}")
            p = self.current
            if p is not None and not p.exited.is_set():
                break
            await asyncio.sleep(0.01)  # the dead worker's exit is being handled
        q: asyncio.Queue = asyncio.Queue()
        p.calls[pid] = q
        try:
            self._send(p, {"op": "predict", "id": pid, "input": payload, "files": files, "out": str(out_dir)})
            while True:
                msg = await q.get()
                ev = msg.get("ev")
                if ev == "done":
                    return msg
                if ev == "failed":
                    raise WorkerFailed(str(msg.get("error") or "failed"), canceled=bool(msg.get("canceled")))
                if ev == "gone":
                    raise WorkerFailed(str(msg["error"]), crashed=True)
                await on_event(msg)
        finally:
            p.calls.pop(pid, None)

    def cancel(self, pid: str) -> None:
        """Ask the worker to stop prediction `pid`; kill the worker if it has not after the grace."""
        p = self.current
        if p is None or pid not in p.calls:
            return
        self._send(p, {"op": "cancel", "id": pid})
        asyncio.get_running_loop().call_later(self.options.kill_grace_s, self._kill_if_running, p, pid)

    def _kill_if_running(self, p: _Proc, pid: str) -> None:
        if pid in p.calls and not p.exited.is_set():
            log.warning("prediction %s did not stop within %.0fs of its cancel; killing the worker",
                        pid, self.options.kill_grace_s)
            p.killed_by_us = True
            self._kill(p)

    def _send(self, p: _Proc, message: dict[str, Any]) -> None:
        if not p.writer.is_closing():  # else the worker is gone and its exit says so
            p.writer.write(encode(message))

    def _kill(self, p: _Proc) -> None:
        if p.proc.returncode is not None:
            return  # reaped: its pid may be someone else's now
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(p.proc.pid, signal.SIGKILL)  # its own session: its subprocesses go too
        with contextlib.suppress(ProcessLookupError):
            p.proc.kill()

    def _stop(self, p: _Proc) -> None:
        p.killed_by_us = True
        self._kill(p)

    async def close(self) -> None:
        self.closing = True
        p = self.current
        if p is not None:
            self._stop(p)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(p.exited.wait(), 10)
        for t in list(self._tasks):
            t.cancel()
        self.root.remove()


def _died_unborn(p: _Proc) -> bool:
    """Whether a worker was killed by a signal (not ours) before it sent a single frame."""
    code = p.proc.returncode
    return p.frames == 0 and code is not None and code < 0 and not p.killed_by_us


class _WorkerGone(Exception):
    pass


async def introspect(project: Path, options: WorkerOptions, timeout_s: float = 300.0) -> dict[str, Any]:
    """A project's schema and traits, read by a worker in introspect mode. Raises PackageInvalid."""
    worker = ModelWorker(project, options, mode="introspect")
    logs: list[str] = []
    try:
        p = await worker._spawn(logs)
        q = p.calls[None]
        async with asyncio.timeout(timeout_s):
            while True:
                msg = await q.get()
                ev = msg.get("ev")
                if ev == "introspected":
                    return {"openapi_schema": msg.get("openapi_schema"), "traits": msg.get("traits")}
                if ev == "failed":
                    raise PackageInvalid(str(msg.get("error") or "could not load the predictor"))
                if ev == "gone":
                    tail = "".join(logs).strip()[-2000:]
                    raise PackageInvalid(f"could not load the predictor: {msg['error']}"
                                         + (f": {tail}" if tail else ""))
    except TimeoutError:
        raise PackageInvalid(f"could not load the predictor within {timeout_s:g}s") from None
    finally:
        worker.closing = True
        await worker.close()
