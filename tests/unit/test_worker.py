"""The model worker process and its supervisor, without Ray: real child processes, real pipes."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

from deployments import protocol
from deployments.run import safe_filename
from deployments.supervisor import (
    ModelWorker,
    WorkerFailed,
    WorkerOptions,
    introspect,
    open_output,
    share_tree,
    worker_env,
)
from vendo_core.errors import PackageInvalid

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "predictors"
EXAMPLES = ROOT / "examples"


async def _run(worker: ModelWorker, pid: str, payload: dict) -> tuple[dict, list[dict]]:
    events: list[dict] = []

    async def on_event(msg):
        events.append(msg)

    out, fd = worker.root.output_dir(pid)
    try:
        done = await worker.predict(pid, payload, {}, out, on_event)
    finally:
        os.close(fd)
    return done, events


def test_environment_is_an_allow_list(monkeypatch, tmp_path):
    monkeypatch.setenv("VENDO_API_TOKEN", "r8_secret")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3-secret")
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")
    monkeypatch.setenv("HF_TOKEN", "hf_x")
    monkeypatch.setenv("LC_ALL", "C.UTF-8")
    env = worker_env(WorkerOptions(), str(tmp_path / "h"), str(tmp_path / "t"), {"GREETING": "hi"})
    assert "VENDO_API_TOKEN" not in env and "AWS_SECRET_ACCESS_KEY" not in env and "RAY_ADDRESS" not in env
    assert "HF_TOKEN" not in env  # only when the operator passes it on
    assert env["LC_ALL"] == "C.UTF-8" and env["GREETING"] == "hi"
    assert env["HOME"] == str(tmp_path / "h") and env["TMPDIR"] == str(tmp_path / "t")
    assert worker_env(WorkerOptions(env=("HF_TOKEN",)), "h", "t")["HF_TOKEN"] == "hf_x"


def test_outputs_files_and_metrics_come_back_as_json():
    async def go():
        w = ModelWorker(FIXTURES / "async_model", WorkerOptions())
        await w.start()
        try:
            assert w.setup_error is None, w.setup_error
            assert w.traits["is_async"] is True
            done, _ = await _run(w, "p1", {"text": "x"})
            out_dir = w.root.path / "out" / "p1"
            name, filename = done["files"][done["output"]["file"]]
            return done, (out_dir / name).read_text(), filename
        finally:
            await w.close()

    done, content, filename = asyncio.run(go())
    assert done["output"]["text"] == "async:x" and done["output"]["length"] == 1
    assert content == "x" and filename.endswith(".txt")
    assert done["metrics"] == {"calls": 1, "seen": ["x"]}


def test_a_dying_worker_fails_its_prediction_and_the_next_runs_on_a_new_one():
    async def go():
        w = ModelWorker(FIXTURES / "crash", WorkerOptions(kill_grace_s=0.5))
        await w.start()
        try:
            first, _ = await _run(w, "a", {"how": "ok"})
            with pytest.raises(WorkerFailed) as e:
                await _run(w, "b", {"how": "segfault"})
            assert e.value.crashed and "SIGSEGV" in e.value.error
            second, _ = await _run(w, "c", {"how": "ok"})
            assert second["output"] != first["output"] and w.restarts == 1

            # one that ignores its cancel is killed after the grace period and replaced
            task = asyncio.ensure_future(_run(w, "d", {"how": "ignore_cancel"}))
            await asyncio.sleep(0.5)
            w.cancel("d")
            with pytest.raises(WorkerFailed) as e:
                await task
            assert e.value.crashed and "did not stop" in e.value.error
            third, _ = await _run(w, "e", {"how": "ok"})
            assert third["output"] not in (first["output"], second["output"]) and w.restarts == 2
        finally:
            await w.close()

    asyncio.run(go())


def test_failed_setup_is_reported_not_restarted():
    async def go():
        w = ModelWorker(FIXTURES / "setup_fails", WorkerOptions())
        await w.start()
        try:
            assert w.setup_error and "weights are missing" in w.setup_error
            with pytest.raises(WorkerFailed, match="setup failed"):
                await _run(w, "a", {})
            assert w.restarts == 0
        finally:
            await w.close()

    asyncio.run(go())


def test_a_worker_killed_by_a_signal_before_its_first_word_is_started_once_more(tmp_path):
    """A fork that goes wrong in the parent (gRPC's fork handlers abort a child now and then) is not
    the model's failure: the worker is started again, once; a second such death is reported."""
    marker = tmp_path / "aborted-once"
    python = tmp_path / "python"
    python.write_text(f"#!/bin/sh\nif [ ! -e {marker} ]; then touch {marker}; kill -ABRT $$; fi\n"
                      f'exec {sys.executable} "$@"\n')
    python.chmod(0o755)
    always = tmp_path / "always"
    always.write_text("#!/bin/sh\nkill -ABRT $$\n")
    always.chmod(0o755)

    async def go():
        w = ModelWorker(EXAMPLES / "hello-world", WorkerOptions(python=str(python)))
        await w.start()
        try:
            assert marker.exists() and w.setup_error is None
            done, _ = await _run(w, "a", {"text": "again"})
            assert done["output"] == "hello again"
        finally:
            await w.close()
        w = ModelWorker(EXAMPLES / "hello-world", WorkerOptions(python=str(always)))
        await w.start()
        try:
            assert w.setup_error and "SIGABRT" in w.setup_error
        finally:
            await w.close()

    asyncio.run(go())


def test_introspection_runs_in_a_worker():
    info = asyncio.run(introspect(EXAMPLES / "hello-world", WorkerOptions()))
    assert set(info) == {"openapi_schema", "traits"}
    assert "text" in info["openapi_schema"]["components"]["schemas"]["Input"]["properties"]


def test_introspection_of_a_broken_project_is_package_invalid():
    project = Path(tempfile.mkdtemp(prefix="vendo-broken-"))  # a worker uid can reach it (pytest's tmp: not)
    try:
        (project / "cog.yaml").write_text('predict: "predict.py:Predictor"\n')
        (project / "predict.py").write_text("raise RuntimeError('broken at import')\n")
        share_tree(project)
        with pytest.raises(PackageInvalid, match="broken at import"):
            asyncio.run(introspect(project, WorkerOptions()))
    finally:
        shutil.rmtree(project)


def test_output_files_are_opened_only_as_plain_regular_files(tmp_path):
    (tmp_path / "ok").write_bytes(b"data")
    (tmp_path / "link").symlink_to("/etc/passwd")
    os.mkfifo(tmp_path / "fifo")
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.close(open_output(fd, "ok"))
        for bad in ("link", "fifo", "../ok", "", "."):
            with pytest.raises((OSError, ValueError)):
                os.close(open_output(fd, bad))
    finally:
        os.close(fd)
    assert safe_filename("../../other/x.png") == "x.png"
    assert safe_filename("a b.png") == "a_b.png" and safe_filename("..") == "output"


def test_frames_are_json_and_bounded():
    frame = protocol.encode({"ev": "log", "text": "\ud800 lone surrogate"})
    assert protocol.decode(frame[protocol.HEADER.size:])["text"] == "\ud800 lone surrogate"
    with pytest.raises(protocol.ProtocolError):
        protocol.decode(b"\x80\x04K.")  # a pickle is not a frame
    with pytest.raises(protocol.ProtocolError):
        protocol.decode(b"[1, 2]")

    async def oversized():
        reader = asyncio.StreamReader()
        reader.feed_data(protocol.HEADER.pack(protocol.MAX_FRAME + 1))
        await protocol.read_frame(reader)

    with pytest.raises(protocol.ProtocolError):
        asyncio.run(oversized())


SYSTEM_PYTHON = f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}"


@pytest.mark.skipif(os.geteuid() != 0 or not os.access(SYSTEM_PYTHON, os.X_OK),
                    reason="needs root and a system Python of this version the worker uid can run")
def test_as_root_the_worker_runs_unprivileged(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("operator only")
    os.chmod(secret, 0o600)

    async def go():
        w = ModelWorker(FIXTURES / "hostile", WorkerOptions(python=SYSTEM_PYTHON))
        await w.start()
        try:
            assert w.setup_error is None, w.setup_error
            assert w.isolation.level == "full"
            done, _ = await _run(w, "p", {"paths": json.dumps([str(secret), "/root/.ray/auth_token"]),
                                          "try_ray": False})
            name, _ = done["files"][done["output"]]
            return json.loads((w.root.path / "out" / "p" / name).read_text())
        finally:
            await w.close()

    report = asyncio.run(go())
    assert report["uid"] == 65534
    assert report["readable"] == []
    assert not report["parent_environ"] and not report["setup_parent_environ"]
    assert not report["ray_token_in_home"]
    assert report["redis_clients"] == 0 and report["platform_modules"] == []


@pytest.mark.parametrize("python", [None, SYSTEM_PYTHON] if os.geteuid() == 0 and os.access(SYSTEM_PYTHON, os.X_OK)
                         else [None])
def test_model_code_writes_beside_its_files_runs_python_and_installs_its_own_artifacts(python):
    """A Cog container's /src is the model's to write in, `python` is on its PATH, and
    requirements.txt may name the project's own archives; the shared package stays untouched."""
    tmp_path = Path(tempfile.mkdtemp(prefix="vendo-test-"))  # pytest's own is closed to the worker uid
    project = tmp_path / "project"
    (project / "dist").mkdir(parents=True)
    (project / "cog.yaml").write_text('build:\n  python_requirements: requirements.txt\npredict: "predict.py:P"\n')
    (project / "requirements.txt").write_text("./dist/tiny_pkg-0.1.0-py3-none-any.whl\n")
    import zipfile
    with zipfile.ZipFile(project / "dist" / "tiny_pkg-0.1.0-py3-none-any.whl", "w") as whl:
        whl.writestr("tiny_pkg/__init__.py", "MESSAGE = 'from the wheel'\n")
        info = "tiny_pkg-0.1.0.dist-info"
        whl.writestr(f"{info}/METADATA", "Metadata-Version: 2.1\nName: tiny-pkg\nVersion: 0.1.0\n")
        whl.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: t\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        whl.writestr(f"{info}/RECORD", "")
    (project / "predict.py").write_text(
        "import pathlib, subprocess\n"
        "from cog import BasePredictor\n"
        "from tiny_pkg import MESSAGE\n"
        "class P(BasePredictor):\n"
        "    def setup(self):\n"
        "        pathlib.Path('state.txt').write_text('written in setup')\n"
        "    def predict(self) -> str:\n"
        "        ran = subprocess.run(['python', '-c', 'print(6 * 7)'], capture_output=True, text=True).stdout.strip()\n"
        "        return f\"{pathlib.Path('state.txt').read_text()}; {MESSAGE}; {ran}\"\n")
    share_tree(tmp_path)
    before = sorted(p.name for p in project.iterdir())

    async def go():
        w = ModelWorker(project, WorkerOptions(python=python))
        await w.start()
        try:
            assert w.setup_error is None, w.setup_error
            done, _ = await _run(w, "p", {})
            return done["output"]
        finally:
            await w.close()

    try:
        assert asyncio.run(go()) == "written in setup; from the wheel; 42"
        assert sorted(p.name for p in project.iterdir()) == before
    finally:
        shutil.rmtree(tmp_path)


def _env_project(environment: list[str]) -> Path:
    """A project that reports where and with what it runs; in a folder the worker's uid can read."""
    root = Path(tempfile.mkdtemp(prefix="vendo-test-"))
    project = root / "project"
    project.mkdir()
    (project / "cog.yaml").write_text('predict: "predict.py:P"\nenvironment:\n'
                                      + "".join(f"  - {e}\n" for e in environment))
    (project / "helper.py").write_text("NAME = 'helper beside predict.py'\n")
    (project / "predict.py").write_text(
        "import os, sys\n"
        "from cog import BasePredictor\n"
        "from helper import NAME\n"
        "class P(BasePredictor):\n"
        "    def predict(self) -> str:\n"
        "        return '|'.join([os.environ.get('GREETING', ''), os.environ.get('PYTHONHASHSEED', ''),\n"
        "                         str(sys.flags.hash_randomization), os.path.basename(os.getcwd()), NAME,\n"
        "                         os.path.basename(sys.path[0])])\n")
    share_tree(root)
    return project


def _prestarted_run(project: Path, env: dict[str, str] | None = None) -> tuple[str, bool]:
    """Prestart a worker, then give it `project`: (its answer, whether the prestarted process ran it)."""
    async def go():
        w = ModelWorker(None, WorkerOptions(), env=env)
        await w.prestart()
        early = w.current
        assert early is not None and early.proc.poll() is None
        w.project = project
        await w.start()
        try:
            assert w.setup_error is None, w.setup_error
            done, _ = await _run(w, "p", {})
            return done["output"], w.current is early
        finally:
            await w.close()

    try:
        return asyncio.run(go())
    finally:
        shutil.rmtree(project.parent)


def test_a_prestarted_worker_runs_the_project_as_one_started_for_it():
    """The cold start's interpreter is started before the package is there; told its project, it
    runs it in the same folder, import path and environment as a worker started for it."""
    output, adopted = _prestarted_run(_env_project(["GREETING=hello"]), env={"COG_WEIGHTS": "x"})
    assert adopted
    greeting, seed, randomized, cwd, helper, path0 = output.split("|")
    assert greeting == "hello" and seed == "" and randomized == "1"
    assert cwd == "src" and path0 == "src" and helper == "helper beside predict.py"


def test_a_project_that_sets_a_startup_variable_gets_an_interpreter_started_with_it():
    """PYTHONHASHSEED (like LD_*, LC_*, TZ) is read as the interpreter starts: telling a running one
    would be too late, so the prestarted one is dropped and a worker is started with it."""
    output, adopted = _prestarted_run(_env_project(["GREETING=hi", "PYTHONHASHSEED=0"]))
    assert not adopted
    assert output.split("|")[:3] == ["hi", "0", "0"]  # hash randomization off: it was there at start


def test_a_package_that_cannot_be_unpacked_stops_the_prestarted_worker():
    async def go():
        w = ModelWorker(None, WorkerOptions())
        await w.prestart()
        early = w.current
        w.project = Path(tempfile.gettempdir())
        w.fail("BadZipFile: not a package")
        await asyncio.wait_for(early.exited.wait(), 10)
        try:
            with pytest.raises(WorkerFailed, match="setup failed: BadZipFile"):
                await _run(w, "a", {})
        finally:
            await w.close()

    asyncio.run(go())
