"""Cog's own HTTP server (coglet 0.23.1, `python -m cog.server.http`) on a Cog project, as `cog build`
would run it in a container: the predictor ref in `COG_PREDICT_TYPE_STUB`, `concurrency.max` in
`COG_MAX_CONCURRENCY`, the port in `PORT`, and the OpenAPI schema at `.cog/openapi_schema.json` (so
coglet validates inputs as it does in a built image)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx


class CogServer:
    """A running coglet server on 127.0.0.1; use as a context manager."""

    def __init__(self, project_dir: str | Path, port: int, log_path: Path):
        self.project_dir = Path(project_dir)
        self.port = port
        self.log_path = log_path
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen | None = None
        self._workdir: Path | None = None

    def __enter__(self) -> CogServer:
        from deployments import cog_runtime

        config = cog_runtime.read_cog_config(self.project_dir)
        work = Path(tempfile.mkdtemp(prefix="bench-cog-"))
        self._workdir = work
        project = work / "src"
        shutil.copytree(self.project_dir, project)
        (project / ".cog").mkdir(exist_ok=True)
        (project / ".cog" / "openapi_schema.json").write_text(json.dumps(cog_runtime.openapi_schema(project)))
        venv_bin = str(Path(sys.executable).parent)
        env = dict(os.environ, PORT=str(self.port), COG_PREDICT_TYPE_STUB=config.predictor_ref,
                   COG_MAX_CONCURRENCY=str(config.concurrency_max or 1),
                   PATH=venv_bin + os.pathsep + os.environ.get("PATH", ""))  # coglet's worker runs `python`
        env.pop("PYTHONPATH", None)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "cog.server.http", "--host", "127.0.0.1"],
                                     cwd=project, env=env, stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        self._wait_ready()
        return self

    def _wait_ready(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"coglet exited with {self.proc.returncode}; see {self.log_path}")
            try:
                r = httpx.get(f"{self.url}/health-check", timeout=2, trust_env=False)
                status = r.json().get("status")
                if status == "READY":
                    return
                if status in ("SETUP_FAILED", "DEFUNCT"):
                    raise RuntimeError(f"coglet setup failed: {r.text[:500]}")
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"coglet not ready in {timeout_s:.0f}s; see {self.log_path}")

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # its own session: the server and its worker
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
