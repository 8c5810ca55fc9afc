"""One run of a prediction, the parent's half: stage the platform's own input files where the
worker can read them, hand the prediction to the worker, and turn what comes back into state:
logs into the prediction's sink, streamed items appended to its event stream as they come, and
output files (placed by the worker in the prediction's output folder) uploaded under the
prediction's storage folder. Nothing the worker sends is trusted beyond being JSON: file names are
checked and opened without following links."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import mimetypes
import os
import re
from pathlib import Path
from typing import Any

from deployments import logs
from deployments.supervisor import ModelWorker, WorkerFailed, open_output, remove_dir, share_tree
from vendo_core.files import Files, file_id_of, file_urls_in, stored_ref
from vendo_core.keys import prediction_files, weights_key
from vendo_core.storage import ObjectStore
from vendo_core.store import PredictionStore

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class Running:
    """What the replica knows of one running prediction: its log sink and whether it was asked to
    stop (by a cancel, or by the run-time limit)."""

    __slots__ = ("sink", "worker", "canceled", "timed_out")

    def __init__(self, sink: logs.LogSink, worker: ModelWorker | None = None):
        self.sink = sink
        self.worker = worker  # the worker it runs on (a fine-tune's, or the replica's own)
        self.canceled = False
        self.timed_out = False


class Runner:
    """Runs predictions on one replica's worker; the replica owns state changes and cancellation.
    A training's runner (`durable`) stores its output files as weights: by digest, outside the
    prediction's folder, so retention never removes what versions run on."""

    def __init__(self, worker: ModelWorker, store: PredictionStore, files: Files, objects: ObjectStore, *,
                 durable: bool = False):
        self.worker = worker
        self.store = store
        self.files = files
        self.objects = objects
        self.durable = durable

    async def __call__(self, pid: str, payload: dict[str, Any], run: Running,
                       weights: dict[str, str] | None = None) -> tuple[Any, dict]:
        """Run prediction `pid` on `payload`, with `weights` ({input name: weights' storage key}:
        a fine-tune's weights given to its base model as an input) staged as local files.
        Returns (output, metrics); raises WorkerFailed."""
        root = self.worker.root
        in_dir: Path | None = None
        out_dir, out_fd = root.output_dir(pid)
        items: list[Any] = []

        async def on_event(msg: dict[str, Any]) -> None:
            ev = msg.get("ev")
            if ev == "log":
                run.sink.write(str(msg.get("text") or ""))
            elif ev == "item":
                value = await self._take_files(pid, out_fd, msg.get("value"), msg.get("files"))
                items.append(value)
                text = value if isinstance(value, str) else _compact(value)
                await self.store.append_output(pid, value, text, logs=run.sink.drain())

        try:
            local: dict[str, str] = {}
            if any(file_id_of(u) for v in payload.values() for u in file_urls_in(v)):
                owner = await self.files.prediction_owner(pid)
                if owner:
                    in_dir = root.input_dir(pid)
                    local = await self.files.localize(owner, payload, in_dir)
                    share_tree(in_dir)
            if weights:  # named by their stored reference, resolved to the local copy
                payload = dict(payload)
                for name, key in weights.items():
                    payload[name] = stored_ref(key)
                    local[payload[name]] = str(await asyncio.to_thread(self._weights_file, key))
            done = await self.worker.predict(pid, payload, local, out_dir, on_event)
            if self.worker.traits.get("is_iterator"):
                output: Any = items
            else:
                output = await self._take_files(pid, out_fd, done.get("output"), done.get("files"))
            metrics = done.get("metrics")
            return output, metrics if isinstance(metrics, dict) else {}
        finally:
            os.close(out_fd)
            remove_dir(out_dir)
            if in_dir is not None:
                remove_dir(in_dir)

    def _weights_file(self, key: str) -> Path:
        """The local copy of the weights at `key`, fetched once per worker (by digest, so never stale)."""
        dest = self.worker.root.path / "weights" / safe_filename(key.replace("/", "_"))
        if not dest.exists():
            dest.parent.mkdir(mode=0o755, exist_ok=True)
            tmp = dest.with_name(dest.name + ".part")
            self.objects.download(key, tmp)
            os.chmod(tmp, 0o444)
            os.replace(tmp, dest)
        return dest

    async def _take_files(self, pid: str, out_fd: int, value: Any, files: Any) -> Any:
        """Upload the files a worker frame names and put their stored URLs in place of its tokens."""
        if not files:
            return value
        if not isinstance(files, dict):
            raise WorkerFailed("the model's worker sent a malformed output")
        refs: dict[str, str] = {}
        for token, entry in files.items():
            if not (isinstance(entry, list) and len(entry) == 2 and all(isinstance(x, str) for x in entry)):
                raise WorkerFailed("the model's worker sent a malformed output")
            refs[token] = await asyncio.to_thread(self._upload, pid, out_fd, entry[0], entry[1])
        return _replace(value, refs)

    def _upload(self, pid: str, out_fd: int, name: str, filename: str) -> str:
        try:
            fd = open_output(out_fd, name)
        except (OSError, ValueError) as e:
            raise WorkerFailed(f"output file {filename!r} could not be read: {e}") from None
        try:
            ctype = mimetypes.guess_type(filename)[0]
            if self.durable:
                key = weights_key(_sha256_fd(fd), safe_filename(filename))
                if self.objects.exists(key):
                    return stored_ref(key)  # the same weights again: stored once
            else:
                key = prediction_files(pid) + safe_filename(filename)
            proc_path = f"/proc/self/fd/{fd}"
            if os.path.exists(proc_path):
                self.objects.put_file(key, proc_path, ctype)
            else:
                with os.fdopen(os.dup(fd), "rb") as f:
                    self.objects.put_bytes(key, f.read(), ctype)
        finally:
            with contextlib.suppress(OSError):
                os.close(fd)
        return stored_ref(key)


def _sha256_fd(fd: int) -> str:
    h = hashlib.sha256()
    os.lseek(fd, 0, os.SEEK_SET)
    while chunk := os.read(fd, 1 << 20):
        h.update(chunk)
    os.lseek(fd, 0, os.SEEK_SET)
    return h.hexdigest()


def safe_filename(name: str) -> str:
    """A worker-chosen file name made safe as the last part of a storage key."""
    base = _UNSAFE.sub("_", os.path.basename(name or "")).strip("._")[:200]
    return base or "output"


def _replace(value: Any, refs: dict[str, str]) -> Any:
    if isinstance(value, str):
        return refs.get(value, value)
    if isinstance(value, list):
        return [_replace(v, refs) for v in value]
    if isinstance(value, dict):
        return {k: _replace(v, refs) for k, v in value.items()}
    return value


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))
