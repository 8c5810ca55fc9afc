"""Replay Cog's own integration tests (`integration-tests/tests/*.txtar` in replicate/cog) through
a running vendo with the official `replicate` client.

A case is a testscript: commands, then the project's files. Cog runs it against a Docker image
(`cog build`, `cog predict`, `cog serve` + `curl`); here each command becomes what a vendo user
does instead:

- `cog build`          → push the project as a new version of a private model (`! cog build`: the
                         push is refused, and the refusal's text is the command's stderr)
- `cog predict -i k=v` → `client.predictions.create(version=…, input=…)` and `wait()`; stdout is
                         what Cog's CLI prints for that output (the raw string, pretty JSON, or
                         "Written output to: output.png" with the file downloaded), stderr the
                         prediction's logs and error
- `cog serve` + `curl POST|PUT /predictions[/{id}[/cancel]]` → the same predictions over vendo's API
                         (Cog's client-chosen ids map to vendo's), the response rendered as compact
                         JSON like Cog's server answers
- `webhook-server-start|wait` → a local receiver that vendo's webhooks reach
- testscript's own `exec`, `mkdir`, `rm`, `cp`, `exists`, `stdout`, `stderr`, `env`, `skip`

A case that needs something outside that (Docker, `cog doctor`, `cog weights`, a registry, Cog's
`--upload-url` protocol, a terminal, `cog train` while vendo has no trainings) is *not applicable*
and says which command made it so. Run it as
`python -m tests.cogparity --url URL --token TOKEN [--owner NAME] [CASE.txtar ...]`.
"""

from __future__ import annotations

import json
import mimetypes
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

CASES = Path(__file__).resolve().parent / "cases"

# What makes a case not applicable to a platform without Docker: the first word (or `cog` verb)
_NOT_APPLICABLE = {
    "cog doctor": "cog doctor inspects a project's code; vendo has no such command",
    "cog weights": "Cog's weights registry",
    "cog run": "cog run runs a shell in the image",
    "cog exec": "cog exec runs a shell in the image",
    "cog debug": "cog debug prints a Dockerfile",
    "cog push": "pushes an OCI image to a registry",
    "cog init": "scaffolds a project",
    "cog train": "trainings are not part of vendo yet",
    "docker-run": "runs a Docker image",
    "registry-start": "an OCI registry",
    "registry-inspect": "an OCI registry",
    "upload-server-start": "Cog's --upload-url protocol (vendo uploads to its own storage)",
    "upload-server-count": "Cog's --upload-url protocol (vendo uploads to its own storage)",
    "pty-run": "a terminal",
    "stdin": "cog predict reading its input from stdin",
    "cd": "changes the working directory between builds",
    "server-stop": "stops cog serve",
}
_DOCKER_EXEC = ("docker", "go", "git")
# `docker inspect IMAGE --format '{{index .Config.Labels "run.cog.openapi_schema"}}'`: what Cog's
# build put in the image is what vendo's push put in the version
_SCHEMA_LABEL = '{{index .Config.Labels "run.cog.openapi_schema"}}'
# Cog's switch between its static and its runtime schema generator: vendo always imports the module
_NO_OP_ENV = ("COG_STATIC_SCHEMA=1",)


class NotApplicable(Exception):
    pass


class Failed(AssertionError):
    pass


@dataclass
class Case:
    name: str
    script: list[tuple[int, str]]  # (line number, command line)
    files: dict[str, bytes]


@dataclass
class Outcome:
    case: str
    result: str  # "pass" | "fail" | "n/a"
    detail: str = ""
    seconds: float = 0.0


def parse(path: Path) -> Case:
    """txtar: a comment section (the script), then `-- name --` file sections."""
    script: list[tuple[int, str]] = []
    files: dict[str, bytes] = {}
    current: str | None = None
    marker = re.compile(r"^-- (.+) --$")
    lines = path.read_bytes().split(b"\n")
    for number, raw in enumerate(lines, 1):
        m = marker.match(raw.decode("utf-8", "replace"))
        if m:
            current = m.group(1).strip()
            files[current] = b""
            continue
        if current is None:
            text = raw.decode()
            if text.strip() and not text.lstrip().startswith("#"):
                script.append((number, text.strip()))
        else:
            files[current] += raw + b"\n"
    # txtar: a file's content is the lines up to the next marker (the last newline belongs to it)
    if lines and lines[-1] == b"" and current is not None:
        files[current] = files[current][:-1]
    return Case(path.stem, script, files)


def words(line: str, env: dict[str, str]) -> list[str]:
    """testscript's word splitting: spaces separate, single quotes keep text literal ('' is a
    quote), `$VAR`/`${VAR}` expand outside quotes, and an unquoted `#` ends the line."""
    out: list[str] = []
    cur, quoted, have, i = "", False, False, 0
    while i < len(line):
        ch = line[i]
        if quoted:
            if ch == "'" and line[i + 1:i + 2] == "'":
                cur, i = cur + "'", i + 2
                continue
            if ch == "'":
                quoted = False
            else:
                cur += ch
            i += 1
            continue
        if ch == "'":
            quoted, have = True, True
        elif ch == "#" and not cur and not have:
            break
        elif ch.isspace():
            if have:
                out.append(cur)
            cur, have = "", False
        elif ch == "$":
            m = re.match(r"\$(\{(\w+)\}|(\w+))", line[i:])
            if m:
                cur += env.get(m.group(2) or m.group(3), "")
                have = True
                i += len(m.group(0))
                continue
            cur, have = cur + ch, True
        else:
            cur, have = cur + ch, True
        i += 1
    if have:
        out.append(cur)
    return out


_CONDITIONS = {"short": False, "linux": True, "darwin": False, "windows": False, "unix": True,
               "amd64": True, "arm64": False, "net": True}


def _condition(word: str) -> bool:
    neg = word.startswith("!")
    name = word.lstrip("!")
    if name not in _CONDITIONS:
        raise NotApplicable(f"condition [{word}]")
    return _CONDITIONS[name] != neg


class Replay:
    """One case against one vendo."""

    def __init__(self, case: Case, url: str, token: str, owner: str, receiver_factory=None):
        import replicate

        self.case = case
        self.url = url.rstrip("/")
        self.token = token
        self.client = replicate.Client(api_token=token, base_url=self.url)
        self.http = httpx.Client(base_url=self.url, timeout=120,
                                 headers={"Authorization": f"Bearer {token}"})
        self.model = f"{owner}/cog-{case.name.replace('_', '-')}"[:120]
        self.work = Path(tempfile.mkdtemp(prefix=f"cogcase-{case.name}-"))
        self.env = {"WORK": str(self.work), "TEST_IMAGE": f"cog-test-{case.name}", "HOME": str(self.work)}
        self.version: str | None = None
        self.schema: dict | None = None
        self.stdout = ""
        self.stderr = ""
        self.ids: dict[str, str] = {}  # Cog's client-chosen prediction ids → vendo's
        self.receiver = None
        self.receiver_factory = receiver_factory
        self.model_created = False

    # -- the run ---------------------------------------------------------------------------

    def check_applicable(self) -> None:
        for _, line in self.case.script:
            body = re.sub(r"^(!\s+)?(\[[^\]]*\]\s*)*", "", line)
            parts = body.split()
            if not parts:
                continue
            key = " ".join(parts[:2]) if parts[0] == "cog" else parts[0]
            if key in _NOT_APPLICABLE:
                raise NotApplicable(f"`{key}`: {_NOT_APPLICABLE[key]}")
            if _SCHEMA_LABEL in line:
                continue  # the image's schema label is the version's openapi_schema
            if parts[0] == "exec" and len(parts) > 1 and parts[1] in _DOCKER_EXEC:
                raise NotApplicable(f"`exec {parts[1]}`")
            if parts[0] == "env" and any(p.startswith("COG_") and p not in _NO_OP_ENV for p in parts[1:]):
                raise NotApplicable(f"`{body}`: a setting of Cog's CLI")
            if parts[0] == "skip" and not line.startswith("["):
                raise NotApplicable("the case is skipped upstream")
            if parts[0] == "curl":
                path = next((p for p in parts[1:] if p.startswith("/")), "")
                if not re.fullmatch(r"/predictions(/[^/]+(/cancel)?)?|/openapi\.json", path):
                    raise NotApplicable(f"`curl {path}`: an endpoint of Cog's own server")
            if parts[0] == "cog" and parts[1] == "predict" and any(
                    p in ("--use-replicate-token", "--env", "-e") for p in parts):
                raise NotApplicable("a flag of Cog's CLI")
            if "$REPO_ROOT" in line or "$COG_BINARY" in line:
                raise NotApplicable("uses Cog's source tree")
            if "docker" in line.replace("host.docker.internal", ""):
                raise NotApplicable("inspects a Docker image")
            if parts[:2] == ["cog", "build"] and any(p.startswith("--use-cog-base-image") for p in parts):
                raise NotApplicable("builds on Cog's base images")
            if "/health-check" in line:
                raise NotApplicable("polls Cog's own server's /health-check")
            if parts[:2] in (["exec", "python3"], ["exec", "python"]) and len(parts) > 2 and \
                    b"docker" in self.case.files.get(parts[2], b""):
                raise NotApplicable(f"{parts[2]} inspects a Docker image")
            if parts[0] == "curl" and "Accept:text/event-stream" in parts:
                raise NotApplicable("Cog's own server's SSE events (vendo streams as Replicate's API does)")

    def run(self) -> None:
        self.check_applicable()
        for name, data in self.case.files.items():
            target = self.work / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        for number, line in self.case.script:
            try:
                self.step(line)
            except NotApplicable:
                raise
            except Failed as exc:
                raise Failed(f"line {number}: `{line}`: {exc}") from None

    def close(self) -> None:
        if self.receiver is not None:
            self.receiver.__exit__(None, None, None)
        if self.model_created:
            self._delete_model()
        self.http.close()
        shutil.rmtree(self.work, ignore_errors=True)

    def step(self, line: str) -> None:
        neg = line.startswith("!")
        if neg:
            line = line[1:].strip()
        while line.startswith("["):
            cond, _, line = line[1:].partition("]")
            line = line.strip()
            if not all(_condition(c.strip()) for c in cond.split(",")):
                return
        argv = words(line, self.env)
        cmd, args = argv[0], argv[1:]
        handler = {
            "cog": self.cog, "curl": self.curl, "stdout": self.match, "stderr": self.match,
            "exec": self.exec, "mkdir": self.mkdir, "rm": self.rm, "cp": self.cp, "exists": self.exists,
            "env": self.setenv, "skip": self.skip, "grep": self.grep, "cmp": self.cmp,
            "webhook-server-start": self.webhook_start, "webhook-server-wait": self.webhook_wait,
        }.get(cmd)
        if handler is None:
            raise NotApplicable(f"command `{cmd}`")
        if cmd in ("stdout", "stderr"):
            self.match(cmd, args, neg)
        else:
            handler(args, neg)

    # -- testscript's own commands ---------------------------------------------------------

    def match(self, which: str, args: list[str], neg: bool) -> None:
        flags = [a for a in args if a.startswith("-") and len(a) > 1 and a[1:].isalpha()]
        pattern = [a for a in args if a not in flags][0]
        text = self.stdout if which == "stdout" else self.stderr
        if "-count=" in " ".join(flags):
            raise NotApplicable("stdout -count")
        found = re.search(pattern, text, re.M) is not None
        if found == neg:
            shown = text if len(text) < 1500 else text[:1500] + "…"
            raise Failed(f"{which} {'matches' if neg else 'does not match'} {pattern!r}: {shown!r}")

    def exec(self, args: list[str], neg: bool) -> None:
        if args[0] == "docker" and args[-1] == _SCHEMA_LABEL:
            # as Cog's Go build writes the label: compact, keys sorted
            self.stdout = json.dumps(self.schema, separators=(",", ":"), sort_keys=True) + "\n" if self.schema else ""
            self.stderr = ""
            self._expect(self.schema is not None, neg, "no version was pushed")
            return
        if args[0] == "sleep":
            time.sleep(float(args[1]))
            self.stdout = self.stderr = ""
            return
        argv = ["python3" if a == "python3" else a for a in args]
        p = subprocess.run(argv, cwd=self.work, capture_output=True, text=True, timeout=300,
                           env={**os.environ, **self.env})
        self.stdout, self.stderr = p.stdout, p.stderr
        self._expect(p.returncode == 0, neg, f"exit {p.returncode}: {p.stderr[-500:]}")

    def mkdir(self, args: list[str], neg: bool) -> None:
        for a in args:
            if not a.startswith("-"):
                (self.work / a).mkdir(parents=True, exist_ok=True)

    def rm(self, args: list[str], neg: bool) -> None:
        for a in args:
            p = self.work / a
            shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)

    def cp(self, args: list[str], neg: bool) -> None:
        src, dst = args[-2], args[-1]
        data = self.stdout if src == "stdout" else self.stderr if src == "stderr" else None
        if data is not None:
            (self.work / dst).write_text(data)
        else:
            shutil.copy(self.work / src, self.work / dst)

    def exists(self, args: list[str], neg: bool) -> None:
        for a in args:
            if not a.startswith("-"):
                self._expect((self.work / a).exists(), neg, f"{a} does not exist")

    def grep(self, args: list[str], neg: bool) -> None:
        pattern, name = args[-2], args[-1]
        found = re.search(pattern, (self.work / name).read_text(), re.M) is not None
        self._expect(found, neg, f"{pattern!r} not in {name}")

    def cmp(self, args: list[str], neg: bool) -> None:
        a, b = (self.stdout if x == "stdout" else (self.work / x).read_text() for x in args[-2:])
        self._expect(a == b, neg, f"{args[-2]} and {args[-1]} differ")

    def setenv(self, args: list[str], neg: bool) -> None:
        for a in args:
            k, _, v = a.partition("=")
            self.env[k] = v

    def skip(self, args: list[str], neg: bool) -> None:
        raise NotApplicable("skipped: " + " ".join(args))

    @staticmethod
    def _expect(ok: bool, neg: bool, why: str) -> None:
        if neg and ok:
            raise Failed("succeeded, but the case expects it to fail")
        if not neg and not ok:
            raise Failed(why)

    # -- cog build / predict / serve -------------------------------------------------------

    def cog(self, args: list[str], neg: bool) -> None:
        verb, rest = args[0], args[1:]
        if verb == "build":
            self.build(neg)
        elif verb == "predict":
            self.predict(rest, neg)
        elif verb == "serve":
            if self.version is None:
                self.build(False)
            self.env["SERVER_URL"] = self.url
        else:
            raise NotApplicable(f"cog {verb}")

    def build(self, neg: bool) -> None:
        from vendo_core.packaging import pack_project

        self.stdout = self.stderr = ""
        owner, name = self.model.split("/")
        if not self.model_created:
            r = self.http.post("/v1/models", json={"owner": owner, "name": name, "visibility": "private",
                                                   "hardware": "cpu"})
            if r.status_code not in (201, 409):
                raise Failed(f"cannot create the model: {r.status_code} {r.text}")
            self.model_created = True
        data, _ = pack_project(self.work)
        r = self.http.post(f"/v1/models/{self.model}/versions", content=data,
                           headers={"Content-Type": "application/gzip"}, timeout=900)
        ok = r.status_code == 201
        if ok:
            self.version = r.json()["id"]
            self.schema = r.json().get("openapi_schema")
        else:
            self.stderr = _problem_text(r)
        self._expect(ok, neg, f"push refused: {r.status_code} {self.stderr}")

    def _input_schema(self) -> dict:
        return ((self.schema or {}).get("components", {}).get("schemas", {}).get("Input") or {})

    def _output_schema(self) -> dict:
        schemas = (self.schema or {}).get("components", {}).get("schemas", {})
        out = schemas.get("Output") or {}
        return _resolve(out, schemas)

    def predict(self, args: list[str], neg: bool) -> None:
        inputs: dict[str, list[str]] = {}
        json_input: str | None = None
        output_path: str | None = None
        i = 0
        while i < len(args):
            a = args[i]
            if a in ("-i", "--input"):
                k, sep, v = args[i + 1].partition("=")
                if not sep:
                    raise Failed(f"input {args[i + 1]!r}: expected name=value")
                if v.startswith('"') and v.endswith('"') and len(v) > 1:
                    v = v[1:-1]
                inputs.setdefault(k, []).append(v)
                i += 2
            elif a == "--json":
                json_input = args[i + 1]
                i += 2
            elif a in ("-o", "--output"):
                output_path = args[i + 1]
                i += 2
            elif a == "--setup-timeout":
                i += 2
            elif a.startswith("-"):
                raise NotApplicable(f"cog predict {a}")
            else:
                i += 1  # the image name
        if self.version is None:
            self.build(False)
        self.stdout = self.stderr = ""
        if json_input is not None:
            payload = self._json_input(json_input)
        else:
            payload = self._coerce(inputs)
        problem = self._cli_check(payload)
        if problem:  # Cog's CLI refuses these itself, before any prediction starts
            self.stderr = problem
            self._expect(False, neg, problem)
            return
        try:
            pred = self.client.predictions.create(version=self.version, input=payload)
        except Exception as exc:  # noqa: BLE001 - the official client's errors, as the CLI would print them
            self.stderr = _client_error(exc)
            self._expect(False, neg, self.stderr)
            return
        pred.wait()
        self.stderr = (pred.logs or "")
        if json_input is not None:
            rendered = {"status": pred.status, "output": self._files_out(pred.output, output_path),
                        "error": pred.error, "metrics": pred.metrics, "logs": pred.logs}
            text = json.dumps({k: v for k, v in rendered.items() if v is not None}, indent=2)
            if output_path:
                (self.work / output_path).write_text(text)
                self.stderr += f"\nWritten output to: {output_path}"
            else:
                self.stdout = text
            self._expect(pred.status == "succeeded", neg, f"{pred.status}: {pred.error}")
            return
        if pred.status != "succeeded":
            self.stderr += f"\nPrediction failed with status \"{pred.status}\": {pred.error}"
            self._expect(False, neg, self.stderr[-800:])
            return
        self._expect(True, neg, "")
        out = self._files_out(pred.output, output_path)
        schema = self._output_schema()
        if pred.output is None:
            self.stderr += "\nNo output generated"
        elif _is_uri(schema) or (schema.get("type") == "array" and _is_uri(schema.get("items") or {})):
            pass
        elif schema.get("type") == "string" and isinstance(out, str):
            if output_path:
                (self.work / output_path).write_text(out)
            else:
                self.stdout = out + "\n"
        else:
            text = json.dumps(out, indent=2, ensure_ascii=False)
            if output_path:
                (self.work / output_path).write_text(text)
            else:
                self.stdout = text + "\n"

    def _cli_check(self, payload: dict) -> str | None:
        """What Cog's CLI checks before it runs a prediction (pkg/predict/input_validation.go):
        unknown and missing required inputs, in its words."""
        schema = self._input_schema()
        props = schema.get("properties", {})
        unknown = sorted(k for k in payload if k not in props)
        if unknown:
            valid = ", ".join(sorted(props)) or "none"
            if len(unknown) == 1:
                return f'unknown input "{unknown[0]}"; valid inputs are: {valid}'
            return "unknown inputs " + ", ".join(f'"{k}"' for k in unknown) + f"; valid inputs are: {valid}"
        for name in schema.get("required", []):
            if name not in payload:
                return f'missing required input "{name}"'
        return None

    def _json_input(self, raw: str) -> dict:
        if raw.startswith("@"):
            raw = (self.work / raw[1:]).read_text()
        payload = json.loads(raw)
        for k, v in list(payload.items()):
            if isinstance(v, str) and v.startswith("@"):
                payload[k] = open(self.work / v[1:], "rb")  # noqa: SIM115 - the client reads it
        return payload

    def _coerce(self, inputs: dict[str, list[str]]) -> dict:
        """Cog's CLI types each `-i name=value` by the input schema (predict.NewInputsForMode)."""
        props = self._input_schema().get("properties", {})
        schemas = (self.schema or {}).get("components", {}).get("schemas", {})
        out: dict[str, Any] = {}
        for k, values in inputs.items():
            prop = _resolve(props.get(k, {}), schemas)
            kind = prop.get("type")
            items = _resolve(prop.get("items") or {}, schemas)
            if kind == "array":
                out[k] = [self._one(v, items) for v in values]
            else:
                out[k] = self._one(values[-1], prop)
        return out

    def _one(self, value: str, prop: dict) -> Any:
        if value.startswith("@"):
            return open(self.work / value[1:], "rb")  # noqa: SIM115 - the client reads it
        kind = prop.get("type")
        members = {m.get("type") for m in prop.get("anyOf") or []}
        if members:  # a union: the first JSON type the text parses as (Cog's coerceScalarValue)
            numeric = [(int, "integer" in members or "number" in members), (float, "number" in members)]
            for parse, allowed in numeric:  # "1" is an integer, a valid JSON number too; "1.5" a float
                if allowed:
                    try:
                        return parse(value)
                    except ValueError:
                        pass
            if "boolean" in members and value.lower() in ("true", "false"):
                return value.lower() == "true"
            return value
        try:
            if kind == "integer":
                return int(value)
            if kind == "number":
                return float(value)
            if kind == "boolean":
                return value.lower() in ("true", "1", "yes")
            if kind == "object":
                return json.loads(value)
        except ValueError:
            return value
        return value

    def _files_out(self, output: Any, output_path: str | None) -> Any:
        """Download file outputs as Cog's CLI writes them: output.<ext>, output.<i>.<ext>."""
        schema = self._output_schema()
        stem, ext = os.path.splitext(output_path or "output")
        if _is_uri(schema) and isinstance(output, str):
            return self._download(output, stem, ext)
        if schema.get("type") == "array" and _is_uri(schema.get("items") or {}) and isinstance(output, list):
            return [self._download(u, f"{stem}.{i}", ext) for i, u in enumerate(output)]
        return output

    def _download(self, url: str, stem: str, ext: str) -> str:
        r = httpx.get(url, timeout=60, follow_redirects=True)
        r.raise_for_status()
        if not ext:
            ext = os.path.splitext(url.split("?")[0])[1] or mimetypes.guess_extension(
                r.headers.get("content-type", "").split(";")[0]) or ""
        dest = stem + ext
        (self.work / dest).write_bytes(r.content)
        self.stderr += f"\nWritten output to: {dest}"
        return dest

    # -- cog serve + curl ------------------------------------------------------------------

    def curl(self, args: list[str], neg: bool) -> None:
        headers: dict[str, str] = {}
        while args and args[0] == "-H":
            k, _, v = args[1].partition(":")
            headers[k.strip().lower()] = v.strip()
            args = args[2:]
        method, path = args[0].upper(), args[1]
        body: Any = None
        if len(args) > 2:
            raw = os.path.expandvars(_expand(args[2], self.env))
            if raw.startswith("@"):
                raw = (self.work / raw[1:]).read_text()
            try:
                body = json.loads(raw) if raw.strip() else {}
            except json.JSONDecodeError:
                body = raw
        self.stdout = self.stderr = ""
        status, text = self._serve(method, path, body, headers)
        ok = 200 <= status < 300
        if ok:
            self.stdout = text
        else:
            self.stderr = text
        self._expect(ok, neg, f"HTTP {status}: {text[:800]}")

    def _serve(self, method: str, path: str, body: Any, headers: dict[str, str]) -> tuple[int, str]:
        if path == "/openapi.json":
            return 200, json.dumps(self.schema, separators=(",", ":"))
        parts = path.strip("/").split("/")
        if method == "POST" and len(parts) == 3 and parts[2] == "cancel":
            vid = self.ids.get(parts[1], parts[1])
            r = self.http.post(f"/v1/predictions/{vid}/cancel")
            return r.status_code, r.text
        if method in ("POST", "PUT") and len(parts) <= 2:
            if not isinstance(body, dict):
                return 400, "body is not a JSON object"
            client_id = parts[1] if len(parts) == 2 else body.get("id")
            req: dict[str, Any] = {"version": self.version, "input": body.get("input", {})}
            for key in ("webhook", "webhook_events_filter"):
                if key in body:
                    req[key] = body[key]
            if "webhook" in req:
                req["webhook"] = req["webhook"].replace("host.docker.internal", "127.0.0.1")
            asynchronous = headers.get("prefer") == "respond-async"
            r = self.http.post("/v1/predictions", json=req)
            if r.status_code != 201:
                return r.status_code, r.text
            pred = r.json()
            if client_id:
                self.ids[client_id] = pred["id"]
            if asynchronous:
                return 202, _compact(pred)
            pred = self._wait(pred["id"])
            return 200, _compact(pred)
        if method == "GET" and len(parts) == 2:
            r = self.http.get(f"/v1/predictions/{self.ids.get(parts[1], parts[1])}")
            return r.status_code, _compact(r.json()) if r.status_code == 200 else r.text
        raise NotApplicable(f"curl {method} {path}")

    def _wait(self, pid: str, timeout: float = 300) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            r = self.http.get(f"/v1/predictions/{pid}", headers={"Prefer": "wait=60"})
            pred = r.json()
            if pred["status"] in ("succeeded", "failed", "canceled") or time.monotonic() > deadline:
                return pred
            time.sleep(0.2)

    # -- webhooks --------------------------------------------------------------------------

    def webhook_start(self, args: list[str], neg: bool) -> None:
        from tests.integration.webhook_receiver import Receiver

        self.receiver = Receiver().__enter__()
        self.env["WEBHOOK_URL"] = self.receiver.url("/webhook")

    def webhook_wait(self, args: list[str], neg: bool) -> None:
        timeout = _duration(args[0]) if args else 120.0
        try:
            last = self.receiver.until(
                "/webhook", lambda d: d.json.get("status") in ("succeeded", "failed", "canceled"),
                timeout=timeout)[-1].json
        except Exception as exc:  # noqa: BLE001 - queue.Empty
            raise Failed(f"no terminal webhook within {timeout} s ({type(exc).__name__})") from None
        output = last.get("output")
        size = len(output) if isinstance(output, str) else len(json.dumps(output, separators=(",", ":")))
        summary: dict[str, Any] = {"status": last["status"], "output_size": 0 if output is None else size,
                                   "has_error": bool(last.get("error"))}
        if last.get("error"):
            summary["error_message"] = last["error"]
        if last.get("metrics"):
            summary["metrics"] = last["metrics"]
        self.stdout = json.dumps(summary, separators=(",", ":"))

    def _delete_model(self) -> None:
        try:
            for v in self.client.models.get(self.model).versions.list():
                self.http.delete(f"/v1/models/{self.model}/versions/{v.id}")
            self.http.delete(f"/v1/models/{self.model}")
        except Exception:  # noqa: BLE001 - best effort: the test cluster is thrown away anyway
            pass


def _expand(text: str, env: dict[str, str]) -> str:
    return re.sub(r"\$(\{(\w+)\}|(\w+))", lambda m: env.get(m.group(2) or m.group(3), m.group(0)), text)


def _duration(text: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m)?", text)
    if not m:
        return 120.0
    return float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, None: 1}[m.group(2)]


def _resolve(schema: dict, schemas: dict) -> dict:
    ref = schema.get("$ref")
    if ref:
        return schemas.get(ref.rsplit("/", 1)[-1], {})
    for key in ("allOf", "anyOf"):
        if schema.get(key) and len(schema[key]) >= 1 and "type" not in schema:
            alts = [_resolve(s, schemas) for s in schema[key] if s.get("type") != "null"]
            if len(alts) == 1:
                return {**alts[0], **{k: v for k, v in schema.items() if k != key}}
    return schema


def _is_uri(schema: dict) -> bool:
    return schema.get("type") == "string" and schema.get("format") == "uri"


def _compact(pred: dict) -> str:
    return json.dumps(pred, separators=(",", ":"), ensure_ascii=False)


def _problem_text(r: httpx.Response) -> str:
    try:
        body = r.json()
    except ValueError:
        return r.text
    parts = [str(body.get("detail") or body.get("title") or "")]
    for err in body.get("errors") or body.get("invalid_fields") or []:
        parts.append(json.dumps(err))
    return "\n".join(p for p in parts if p)


def _client_error(exc: Exception) -> str:
    detail = getattr(exc, "detail", None) or str(exc)
    return str(detail)


def replay(path: Path, url: str, token: str, owner: str) -> Outcome:
    case = parse(path)
    started = time.monotonic()
    r = Replay(case, url, token, owner)
    try:
        r.run()
        return Outcome(case.name, "pass", seconds=time.monotonic() - started)
    except NotApplicable as exc:
        return Outcome(case.name, "n/a", str(exc))
    except Failed as exc:
        return Outcome(case.name, "fail", str(exc), time.monotonic() - started)
    except Exception as exc:  # noqa: BLE001 - a harness error is a failure of the case, reported
        return Outcome(case.name, "fail", f"{type(exc).__name__}: {exc}", time.monotonic() - started)
    finally:
        r.close()


def applicable(path: Path) -> str | None:
    """None when the case can run against vendo, or why it cannot."""
    r = Replay.__new__(Replay)
    r.case = parse(path)
    try:
        r.check_applicable()
    except NotApplicable as exc:
        return str(exc)
    return None


