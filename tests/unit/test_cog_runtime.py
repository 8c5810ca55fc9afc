"""deployments.cog_runtime against real one-file Cog projects, in-process (no Ray, no Redis)."""

from __future__ import annotations

import asyncio
import base64
import io
import os
import re
import sys
import tempfile
import threading
import time
from pathlib import Path

import cog
import httpx
import pytest
from cog.types import URLPath

from deployments import cog_runtime as cr
from router.validation import validate_input
from vendo_core.errors import InvalidInput, PackageInvalid

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "predictors"
EXAMPLES = ROOT / "examples"


@pytest.fixture(autouse=True)
def _restore_process_state():
    # load() chdirs and edits sys.path as cog does; keep each test independent.
    cwd, path = os.getcwd(), list(sys.path)
    yield
    os.chdir(cwd)
    sys.path[:] = path


def load(name: str, **kwargs) -> cr.LoadedPredictor:
    return cr.load(FIXTURES / name, **kwargs)


def data_uri(data: bytes, mime: str = "text/plain") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


class FileStore:
    """A put_file that records what it was given."""

    def __init__(self):
        self.files: dict[str, bytes] = {}

    def __call__(self, src, filename: str) -> str:
        self.files[filename] = src if isinstance(src, bytes) else Path(src).read_bytes()
        return f"https://files.test/{filename}"


# ---------------------------------------------------------------------------------------------
# cog.yaml
# ---------------------------------------------------------------------------------------------


def write_project(tmp_path: Path, yaml_text: str, files: dict[str, str] | None = None) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "cog.yaml").write_text(yaml_text)
    for name, text in (files or {"predict.py": ""}).items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    return tmp_path


def test_read_cog_config_of_examples():
    image = cr.read_cog_config(EXAMPLES / "image")
    assert (image.predictor_ref, image.method_key, image.python_version) == ("predict.py:Predictor", "predict", "3.11")
    assert image.python_requirements == []  # torch comes from the platform image, no per-version venv
    stream = cr.read_cog_config(EXAMPLES / "stream")
    assert (stream.predictor_ref, stream.method_key, stream.gpu) == ("predict.py:Runner", "run", False)


def test_read_cog_config_full(tmp_path):
    project = write_project(
        tmp_path,
        'build:\n  gpu: true\n  python_requirements: requirements.txt\nrun: "predict.py"\n'
        'train: "predict.py:train"\nenvironment: ["A=1", "B=x=y"]\nconcurrency:\n  max: 3\n',
        {"predict.py": "", "requirements.txt": "# deps\nnumpy==2.4.6  # pinned\n\n--extra-index-url https://x.test\n"},
    )
    config = cr.read_cog_config(project)
    assert config.gpu and config.concurrency_max == 3
    assert config.train_ref == "predict.py:train"
    assert config.environment == {"A": "1", "B": "x=y"}
    assert config.python_requirements == ["numpy==2.4.6", "--extra-index-url https://x.test"]
    assert cr.runtime_env_for(config) == {
        "pip": ["numpy==2.4.6", "--extra-index-url https://x.test"],
        "env_vars": {"A": "1", "B": "x=y"},
    }


def test_requirements_naming_the_projects_own_files_are_installed_by_the_worker(tmp_path):
    reqs = "./dist/local_pkg-0.1.0.tar.gz\n./dist/local zip pkg-0.2.0.zip\nrequests==2.32.3\n"
    project = write_project(tmp_path, 'build:\n  python_requirements: requirements.txt\npredict: "predict.py"\n',
                            {"predict.py": "", "requirements.txt": reqs,
                             "dist/local_pkg-0.1.0.tar.gz": "x", "dist/local zip pkg-0.2.0.zip": "x"})
    config = cr.read_cog_config(project)
    assert config.local_requirements == ["./dist/local_pkg-0.1.0.tar.gz", "./dist/local zip pkg-0.2.0.zip"]
    assert cr.runtime_env_for(config) == {"pip": ["requests==2.32.3"]}  # Ray's pip never sees them


@pytest.mark.parametrize("line", ["./dist/missing.whl", "../outside.whl", "/etc/passwd"])
def test_a_requirement_path_outside_the_project_or_missing_is_refused(tmp_path, line):
    project = write_project(tmp_path / "p", 'build:\n  python_requirements: r.txt\npredict: "predict.py"\n',
                            {"predict.py": "", "r.txt": line + "\n"})
    (tmp_path / "outside.whl").write_text("x")
    with pytest.raises(PackageInvalid, match="not a file or folder inside the project"):
        cr.read_cog_config(project)


def test_runtime_env_from_python_packages_and_empty():
    assert cr.runtime_env_for(cr.read_cog_config(FIXTURES / "runner_weights")) == {"pip": ["numpy==2.4.6"]}
    assert cr.runtime_env_for(cr.read_cog_config(EXAMPLES / "hello-world")) == {}


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("- a list", "mapping"),
        ('run: "predict.py"\npredict: "predict.py"\n', "not both"),
        ("build: {}\n", "no 'run'"),
        ('predict: "missing.py:P"\n', "missing file"),
        ('predict: "../predict.py:P"\n', "inside the project"),
        ("predict: 3\n", "must be a string"),
        ('predict: "predict.py"\nenvironment: ["NOEQUALS"]\n', "environment"),
        ('predict: "predict.py"\nconcurrency: {max: 0}\n', "concurrency.max"),
        ('predict: "predict.py"\nbuild: {python_packages: [a], python_requirements: r.txt}\n', "not both"),
        ("predict: [\n", "cannot be read"),
        ('predict: "predict.py"\nbuild: {python_version: "3.9"}\n', "minimum supported Python version is 3.10"),
        ('predict: "predict.py"\nbuild: {python_version: "three"}\n', "invalid build.python_version"),
        ('predict: "predict.py"\nbuild: {gpu: true, python_packages: [torch]}\n', "torch version must be specified"),
    ],
)
def test_read_cog_config_rejects(tmp_path, yaml_text, message):
    project = write_project(tmp_path, yaml_text)
    with pytest.raises(PackageInvalid, match=message):
        cr.read_cog_config(project)


def test_missing_cog_yaml(tmp_path):
    with pytest.raises(PackageInvalid, match="cog.yaml not found"):
        cr.read_cog_config(tmp_path)


def test_broken_predictor_is_package_invalid(tmp_path):
    project = write_project(tmp_path, 'predict: "predict.py:Predictor"\n', {"predict.py": "import nope_not_a_module\n"})
    with pytest.raises(PackageInvalid, match="ModuleNotFoundError"):
        cr.openapi_schema(project)
    write_project(tmp_path, 'predict: "predict.py:Predictor"\n', {"predict.py": "class Predictor:\n    pass\n"})
    with pytest.raises(PackageInvalid, match="run or predict"):
        cr.load(tmp_path)


# ---------------------------------------------------------------------------------------------
# OpenAPI schema and traits
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def all_inputs_schema():
    return cr.openapi_schema(FIXTURES / "all_inputs")


def test_schema_document_shape(all_inputs_schema):
    s = all_inputs_schema
    assert s["openapi"] == "3.0.2" and s["info"] == {"title": "Cog", "version": cog.__version__}
    assert set(s["paths"]) == {"/", "/health-check", "/predictions", "/predictions/{prediction_id}/cancel"}
    components = s["components"]["schemas"]
    assert {"Input", "Output", "PredictionRequest", "PredictionResponse", "Status", "style", "level"} <= set(components)
    assert components["Status"]["enum"] == ["starting", "processing", "succeeded", "canceled", "failed"]
    assert components["PredictionRequest"]["properties"]["input"] == {"$ref": "#/components/schemas/Input"}
    assert os.getcwd() == str(ROOT)  # openapi_schema restores cwd


def test_schema_input_fields(all_inputs_schema):
    inp = all_inputs_schema["components"]["schemas"]["Input"]
    props = inp["properties"]
    assert inp["title"] == "Input" and inp["type"] == "object"
    assert inp["required"] == ["text"]
    assert list(props) == [
        "text", "times", "ratio", "flag", "style", "level", "code", "note", "maybe",
        "token", "tags", "files", "image", "seed", "old", "options", "mixed",
    ]  # fmt: skip
    assert props["text"] == {
        "x-order": 0,
        "title": "Text",
        "type": "string",
        "description": "Some text",
        "minLength": 1,
        "maxLength": 20,
    }
    assert props["times"] == {
        "x-order": 1,
        "title": "Times",
        "type": "integer",
        "default": 2,
        "description": "Repeat count",
        "minimum": 1,
        "maximum": 5,
    }
    assert props["ratio"]["maximum"] == 1.5
    assert props["style"] == {"x-order": 4, "allOf": [{"$ref": "#/components/schemas/style"}], "default": "plain"}
    assert all_inputs_schema["components"]["schemas"]["level"] == {
        "title": "level",
        "description": "An enumeration.",
        "enum": [1, 2, 3],
        "type": "integer",
    }
    assert props["code"]["pattern"] == "^[a-z]+[0-9]$"
    assert props["note"] == {
        "x-order": 7,
        "title": "Note",
        "type": "string",
        "default": None,
        "nullable": True,
        "description": "An optional note",
    }
    assert props["maybe"] == {"x-order": 8, "title": "Maybe", "type": "integer", "default": None, "nullable": True}
    assert props["token"] == {
        "x-order": 9,
        "title": "Token",
        "type": "string",
        "format": "password",
        "writeOnly": True,
        "x-cog-secret": True,
        "default": None,
        "nullable": True,
        "description": "Legacy optional secret",
    }
    assert props["tags"] == {"x-order": 10, "title": "Tags", "type": "array", "items": {"type": "string"}, "default": ["a"]}
    assert props["files"]["items"] == {"type": "string", "format": "uri"} and props["files"]["nullable"] is True
    assert props["image"] == {
        "x-order": 12,
        "title": "Image",
        "type": "string",
        "format": "uri",
        "default": None,
        "nullable": True,
        "x-cog-accept": "image/*",
    }
    # Legacy `seed: int = Input(default=None)`: optional with default null, not required as in cog 0.23.
    assert props["seed"] == {"x-order": 13, "title": "Seed", "type": "integer", "default": None, "nullable": True}
    assert props["old"]["deprecated"] is True
    assert props["options"] == {"x-order": 15, "title": "Options", "type": "object", "default": {"k": 1}}
    assert props["mixed"]["anyOf"] == [{"type": "integer"}, {"type": "string"}]


@pytest.mark.parametrize(
    ("fixture", "output"),
    [
        ("generator", {"title": "Output", "type": "array", "items": {"type": "string"}, "x-cog-array-type": "iterator"}),
        (
            "concat",
            {
                "title": "Output",
                "type": "array",
                "items": {"type": "string"},
                "x-cog-array-type": "iterator",
                "x-cog-array-display": "concatenate",
            },
        ),
        ("path_output", {"title": "Output", "type": "string", "format": "uri"}),
        ("paths_output", {"title": "Output", "type": "array", "items": {"type": "string", "format": "uri"}}),
        (
            "async_model",
            {
                "title": "Output",
                "type": "object",
                "properties": {
                    "text": {"type": "string", "title": "Text"},
                    "length": {"type": "integer", "title": "Length"},
                    "file": {"type": "string", "format": "uri", "title": "File"},
                    "score": {"type": "number", "nullable": True, "title": "Score"},
                },
                "required": ["text", "length", "file"],
            },
        ),
        (
            "pydantic_output",
            {
                "title": "Output",
                "type": "object",
                "properties": {
                    "labels": {"type": "array", "items": {"type": "string"}, "title": "Labels"},
                    "best": {"type": "integer", "nullable": True, "title": "Best"},
                },
                "required": ["labels"],
            },
        ),
    ],
)
def test_schema_outputs(fixture, output):
    assert cr.openapi_schema(FIXTURES / fixture)["components"]["schemas"]["Output"] == output


def test_streaming_decorator_sets_x_cog_streaming():
    assert cr.openapi_schema(FIXTURES / "generator")["paths"]["/predictions"]["post"]["x-cog-streaming"] is True
    assert "x-cog-streaming" not in cr.openapi_schema(FIXTURES / "concat")["paths"]["/predictions"]["post"]


def test_schema_with_trainer():
    s = cr.openapi_schema(FIXTURES / "runner_weights")
    components = s["components"]["schemas"]
    assert "/trainings" in s["paths"] and "/trainings/{training_id}/cancel" in s["paths"]
    assert components["TrainingInput"]["properties"]["mode"]["allOf"] == [{"$ref": "#/components/schemas/mode"}]
    assert components["TrainingOutput"] == {
        "title": "TrainingOutput",
        "type": "object",
        "properties": {"weights": {"type": "string", "format": "uri", "title": "Weights"}},
        "required": ["weights"],
    }
    assert components["Input"]["properties"] == {}


@pytest.mark.parametrize(
    ("fixture", "traits"),
    [
        ("all_inputs", {"method": "predict", "is_async": False, "is_iterator": False, "concurrency_max": None}),
        ("async_model", {"method": "run", "is_async": True, "is_iterator": False, "concurrency_max": 4}),
        ("generator", {"method": "predict", "is_async": False, "is_iterator": True, "streaming": True}),
        ("async_generator", {"method": "run", "is_async": True, "is_iterator": True}),
        ("runner_weights", {"method": "run", "has_train": True}),
    ],
)
def test_predictor_traits(fixture, traits):
    got = cr.predictor_traits(FIXTURES / fixture)
    assert {k: got[k] for k in traits} == traits


# ---------------------------------------------------------------------------------------------
# Loading and running
# ---------------------------------------------------------------------------------------------


def test_load_sync_predictor_flags_and_cwd():
    loaded = load("all_inputs")
    assert (loaded.method_name, loaded.is_async, loaded.is_generator, loaded.is_iterator) == ("predict", False, False, False)
    assert loaded.legacy_optional == {"token", "files", "image", "seed"}
    assert os.getcwd() == str(FIXTURES / "all_inputs") and sys.path[0] == str(FIXTURES / "all_inputs")
    assert loaded.schema()["components"]["schemas"]["Input"]["properties"]["seed"]["nullable"] is True


def test_async_predictor_with_async_setup():
    loaded = load("async_model")
    assert loaded.is_async and loaded.setup_is_async and not loaded.is_iterator
    assert loaded.concurrency_max == 4

    async def main():
        await loaded.asetup()
        assert loaded.predictor.loop is asyncio.get_running_loop()  # set up on the serving loop
        with cr.metric_scope() as metrics:
            out = await loaded.call(cr.prepare_input(loaded, {"text": "yo"}))
        return out, dict(metrics)

    out, metrics = asyncio.run(main())
    store = FileStore()
    encoded = cr.encode_output(out, store)
    name = Path(out.file).name
    assert encoded == {"text": "async:yo", "length": 2, "file": f"https://files.test/{name}", "score": None}
    assert store.files[name] == b"yo"
    assert metrics == {"calls": 1, "seen": ["yo"]}


def test_sync_setup_runs_async_setup_with_asyncio_run():
    loaded = load("async_model")
    loaded.setup()
    assert loaded.predictor.prefix == "async:"

    async def inside_loop():
        loaded.setup()

    with pytest.raises(RuntimeError, match="asetup"):
        asyncio.run(inside_loop())


def test_asetup_runs_sync_setup_in_executor():
    loaded = load("cancel")
    seen = {}
    original = type(loaded.predictor).setup

    def spy(self):
        seen["thread"] = threading.current_thread()
        original(self)

    loaded.predictor.setup = spy.__get__(loaded.predictor)
    asyncio.run(loaded.asetup())
    assert seen["thread"] is not threading.main_thread() and loaded.predictor.state == "idle"


def test_setup_failure_propagates():
    loaded = load("setup_fails")
    with pytest.raises(RuntimeError, match="weights are missing"):
        loaded.setup()


def test_setup_weights(monkeypatch):
    loaded = load("runner_weights")
    assert loaded.setup_takes_weights
    loaded.setup(weights="/w.bin")
    assert loaded.call({}) == "weights=/w.bin"
    monkeypatch.setenv("COG_WEIGHTS", "https://weights.test/w")
    loaded.setup()
    assert loaded.call({}) == "weights=https://weights.test/w"


def test_load_trainer_class():
    loaded = load("runner_weights", train=True)
    assert loaded.method_name == "train"
    out = loaded.call(cr.prepare_input(loaded, {"steps": 3}))
    store = FileStore()
    assert cr.encode_output(out, store) == {"weights": "https://files.test/weights.bin"}
    assert store.files["weights.bin"] == b"\x03"
    assert "TrainingInput" in loaded.schema()["components"]["schemas"]


def test_sync_generator_and_module_isolation():
    gen = load("generator")
    assert gen.is_generator and gen.is_iterator and not gen.is_async
    assert list(gen.call(cr.prepare_input(gen, {"n": 2}))) == ["generator-0", "generator-1"]
    # Both projects have predict.py and helpers.py: the second load must not see the first's.
    concat = load("concat")
    assert "".join(concat.call(cr.prepare_input(concat, {"words": ["x"]}))) == "concat x"
    assert sys.modules["helpers"].NAME == "concat"


def test_async_generator():
    loaded = load("async_generator")
    assert loaded.is_async and loaded.is_async_generator and loaded.is_iterator

    async def consume():
        return [item async for item in loaded.call(cr.prepare_input(loaded, {"n": 3}))]

    assert asyncio.run(consume()) == ["t0 ", "t1 ", "t2 "]


def test_pydantic_output():
    loaded = load("pydantic_output")
    out = loaded.call(cr.prepare_input(loaded, {}))
    assert cr.encode_output(out, FileStore()) == {"labels": ["l0", "l1"], "best": 2}


def test_path_and_list_of_paths_outputs():
    store = FileStore()
    single = load("path_output")
    assert cr.encode_output(single.call(cr.prepare_input(single, {"text": "t"})), store) == "https://files.test/result.txt"
    many = load("paths_output")
    out = cr.encode_output(many.call(cr.prepare_input(many, {"count": 3})), store)
    assert out == [f"https://files.test/part-{i}.txt" for i in range(3)]
    assert store.files["result.txt"] == b"t" and store.files["part-2.txt"] == b"2"


def test_encode_output_values():
    store = FileStore()

    class Named(io.BytesIO):
        name = "/tmp/picture.png"

    value = {
        "secret": cog.Secret("s"),
        "raw": io.BytesIO(b"abc"),
        "named": Named(b"png"),
        "list": [io.BytesIO(b"0"), io.StringIO("1")],
        "tuple": (1, 2.5, None, True),
        "bytes": b"\x00",
    }
    assert cr.encode_output(value, store) == {
        "secret": "s",
        "raw": "https://files.test/output.bin",
        "named": "https://files.test/picture.png",
        "list": ["https://files.test/output.0.bin", "https://files.test/output.1.bin"],
        "tuple": [1, 2.5, None, True],
        "bytes": "https://files.test/output.bin",
    }
    assert store.files["output.1.bin"] == b"1"
    assert cr.encode_output(io.BytesIO(b"x"), store, index=7) == "https://files.test/output.7.bin"
    with pytest.raises(TypeError):
        cr.encode_output(object(), store)


# ---------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def all_inputs():
    cwd, path = os.getcwd(), list(sys.path)
    loaded = cr.load(FIXTURES / "all_inputs", chdir=False)
    yield loaded
    os.chdir(cwd)
    sys.path[:] = path


def test_prepare_input_fills_defaults_and_legacy_none(all_inputs, capsys):
    kwargs = cr.prepare_input(all_inputs, {"text": "hi", "unknown": 1})
    assert capsys.readouterr().out == ""  # no "unknown input field" warning
    assert kwargs["times"] == 2 and kwargs["style"] == "plain" and kwargs["tags"] == ["a"]
    for name in ("note", "maybe", "token", "files", "image", "seed"):
        assert kwargs[name] is None
    out = all_inputs.call(kwargs)
    assert out["seed"] is None and out["options"] == {"k": 1}


def test_prepare_input_converts_data_uris_and_secrets(all_inputs):
    temp_files: list[str] = []
    kwargs = cr.prepare_input(
        all_inputs,
        {"text": "hi", "token": "t0k", "image": data_uri(b"img"), "files": [data_uri(b"f1"), data_uri(b"f2")]},
        temp_files=temp_files,
    )
    assert isinstance(kwargs["token"], cog.Secret) and kwargs["token"].get_secret_value() == "t0k"
    assert isinstance(kwargs["image"], cog.Path) and not isinstance(kwargs["image"], URLPath)
    assert kwargs["image"].read_bytes() == b"img"
    out = all_inputs.call(kwargs)
    assert (out["image"], out["files"], out["token"]) == ("img", ["f1", "f2"], "t0k")
    assert sorted(temp_files) == sorted(str(p) for p in [kwargs["image"], *kwargs["files"]])
    for path in temp_files:
        os.unlink(path)


def test_prepare_input_resolve_url_uses_local_files(all_inputs, tmp_path):
    local = tmp_path / "upload.txt"
    local.write_text("local")
    own = "http://127.0.0.1:8000/v1/files/abc"  # loopback, but resolved before the private-URL check

    kwargs = cr.prepare_input(
        all_inputs, {"text": "hi", "image": own, "files": [own]}, resolve_url=lambda u: str(local) if u == own else None
    )
    assert kwargs["image"] == cog.Path(local) and kwargs["files"] == [cog.Path(local)]


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1/a.png", "https://10.1.2.3/a.png", "http://169.254.169.254/latest/meta-data", "http://[::1]/x"],
)
def test_prepare_input_refuses_private_urls(all_inputs, url):
    with pytest.raises(cr.PrivateURLRefused) as exc:
        cr.prepare_input(all_inputs, {"text": "hi", "image": url})
    assert isinstance(exc.value, ValueError) and isinstance(exc.value, InvalidInput)
    assert exc.value.field == "image" and "image" in str(exc.value)
    with pytest.raises(cr.PrivateURLRefused):
        cr.prepare_input(all_inputs, {"text": "hi", "files": [data_uri(b"ok"), url]})


class FakeResponse:
    def __init__(self, body: bytes = b"", location: str | None = None):
        self.body = body
        self.location = location


@pytest.fixture
def fake_http(monkeypatch):
    """Serve URLs from a dict instead of the network; records what was fetched."""
    routes: dict[str, FakeResponse] = {}
    fetched: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        url = str(request.url)
        fetched.append(url)
        r = routes[url]
        if r.location:
            return httpx.Response(302, headers={"location": r.location})
        return httpx.Response(200, content=r.body)

    def client(allow_private: bool) -> httpx.Client:  # redirects are followed (and checked) by us
        return httpx.Client(transport=httpx.MockTransport(handler), follow_redirects=False)

    monkeypatch.setattr("deployments.cog_io._client", client)
    return routes, fetched


def test_prepare_input_downloads_public_urls(all_inputs, fake_http):
    routes, fetched = fake_http
    # IP literals: the private-address check needs no DNS.
    routes["http://93.184.215.14/a.png"] = FakeResponse(location="/b.png")
    routes["http://93.184.215.14/b.png"] = FakeResponse(b"png-bytes")
    temp_files: list[str] = []
    kwargs = cr.prepare_input(all_inputs, {"text": "hi", "image": "http://93.184.215.14/a.png"}, temp_files=temp_files)
    assert fetched == ["http://93.184.215.14/a.png", "http://93.184.215.14/b.png"]
    assert kwargs["image"].read_bytes() == b"png-bytes" and str(kwargs["image"]).endswith("a.png")
    assert temp_files == [str(kwargs["image"])]
    os.unlink(temp_files[0])


def test_prepare_input_refuses_redirects_to_private_urls(all_inputs, fake_http):
    routes, fetched = fake_http
    routes["http://93.184.215.14/a.png"] = FakeResponse(location="http://169.254.169.254/latest/meta-data")
    with pytest.raises(cr.PrivateURLRefused):
        cr.prepare_input(all_inputs, {"text": "hi", "image": "http://93.184.215.14/a.png"})
    assert fetched == ["http://93.184.215.14/a.png"]


def test_prepare_input_allows_private_urls_when_asked(all_inputs, fake_http):
    routes, fetched = fake_http
    routes["http://127.0.0.1/a.png"] = FakeResponse(b"downloaded")
    kwargs = cr.prepare_input(all_inputs, {"text": "hi", "image": "http://127.0.0.1/a.png"}, allow_private_urls=True)
    assert fetched == ["http://127.0.0.1/a.png"] and kwargs["image"].read_bytes() == b"downloaded"
    routes["http://127.0.0.1/loop"] = FakeResponse(location="/loop")
    with pytest.raises(InvalidInput, match="too many redirects"):
        cr.prepare_input(all_inputs, {"text": "hi", "image": "http://127.0.0.1/loop"}, allow_private_urls=True)


def test_prepare_input_refuses_local_paths(all_inputs):
    for value in ("/etc/passwd", "predict.py", "file:///etc/passwd"):
        with pytest.raises(InvalidInput) as exc:
            cr.prepare_input(all_inputs, {"text": "hi", "image": value})
        assert (exc.value.field, exc.value.reason) == ("image", "Invalid value for type Path")


def test_prepare_input_payload_must_be_object(all_inputs):
    with pytest.raises(InvalidInput, match="must be an object"):
        cr.prepare_input(all_inputs, ["text"])


AGREEMENT = [
    {"text": "hi"},
    {"text": "hi", "bogus": True},
    {},
    {"text": ""},
    {"text": "x" * 21},
    {"text": 3},
    {"text": None},
    {"text": "a", "times": "4"},
    {"text": "a", "times": 4.0},
    {"text": "a", "times": 2.5},
    {"text": "a", "times": "4.0"},
    {"text": "a", "times": 6},
    {"text": "a", "times": 0},
    {"text": "a", "times": None},
    {"text": "a", "ratio": 1},
    {"text": "a", "ratio": "0.5"},
    {"text": "a", "ratio": 2},
    {"text": "a", "ratio": "abc"},
    {"text": "a", "flag": True},
    {"text": "a", "flag": 1},
    {"text": "a", "flag": "true"},
    {"text": "a", "flag": "false"},
    {"text": "a", "flag": 2},
    {"text": "a", "style": "fancy"},
    {"text": "a", "style": "bold"},
    {"text": "a", "level": 3},
    {"text": "a", "level": "2"},
    {"text": "a", "level": 4},
    {"text": "a", "code": "abc9"},
    {"text": "a", "code": "ABC9"},
    {"text": "a", "note": None},
    {"text": "a", "note": "n"},
    {"text": "a", "note": 1},
    {"text": "a", "maybe": "7"},
    {"text": "a", "token": "s"},
    {"text": "a", "token": None},
    {"text": "a", "token": 5},
    {"text": "a", "tags": ["x", "y"]},
    {"text": "a", "tags": "xy"},
    {"text": "a", "tags": [1]},
    {"text": "a", "files": [data_uri(b"1")]},
    {"text": "a", "files": data_uri(b"1")},
    {"text": "a", "files": None},
    {"text": "a", "image": data_uri(b"1", "image/png")},
    {"text": "a", "image": "/etc/passwd"},
    {"text": "a", "image": 7},
    {"text": "a", "seed": None},
    {"text": "a", "seed": 42},
    {"text": "a", "seed": "42"},
    {"text": "a", "options": {"a": 1}},
    {"text": "a", "options": "x"},
    {"text": "a", "mixed": 3},
    {"text": "a", "mixed": "three"},
    {"text": "a", "mixed": 3.5},
    {"text": "a", "mixed": None},
]


@pytest.mark.parametrize("payload", AGREEMENT)
def test_validate_input_agrees_with_prepare_input(all_inputs, all_inputs_schema, payload):
    try:
        kwargs = cr.prepare_input(all_inputs, payload)
        runtime = None
    except InvalidInput as exc:
        runtime = exc.field
    try:
        validated = validate_input(all_inputs_schema, payload)
        router = None
    except InvalidInput as exc:
        router = exc.field
    assert runtime == router, f"prepare_input rejected {runtime!r}, validate_input rejected {router!r}"
    if router is None:
        for name, value in validated.items():
            if name not in ("token", "files", "image"):  # these become Secret / Path objects
                assert kwargs[name] == value and type(kwargs[name]) is type(value), name


# ---------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------


def test_metrics_are_collected_per_prediction():
    loaded = load("metrics")
    with cr.metric_scope({"replicate_api_token": "r8_x"}) as metrics:
        out = loaded.call(cr.prepare_input(loaded, {"label": "a"}))
    assert out == "r8_x" and metrics.context == {"replicate_api_token": "r8_x"}
    assert metrics == {"label": "a", "steps": 3, "timing": {"inference": 0.5}, "history": ["a"], "flag": True}
    # Outside a scope, cog's own no-op scope is back: recording is silently ignored.
    assert loaded.call({"label": "b", "pause": 0.0}) == ""


def test_metrics_isolated_between_threads():
    loaded = load("metrics")
    results = {}

    def work(label):
        with cr.metric_scope() as metrics:
            loaded.call(cr.prepare_input(loaded, {"label": label, "pause": 0.01}))
        results[label] = dict(metrics)

    threads = [threading.Thread(target=work, args=(label,)) for label in ("a", "b", "c")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for label in ("a", "b", "c"):
        assert results[label]["label"] == label and results[label]["steps"] == 3
        assert results[label]["history"] == [label]


def test_metrics_isolated_between_async_tasks():
    loaded = load("async_model")

    async def one(text):
        with cr.metric_scope() as metrics:
            await loaded.call(cr.prepare_input(loaded, {"text": text, "delay": 0.01}))
        return dict(metrics)

    async def main():
        await loaded.asetup()
        return await asyncio.gather(*(one(t) for t in ("x", "y", "z")))

    assert asyncio.run(main()) == [{"calls": 1, "seen": [t]} for t in ("x", "y", "z")]


def test_metric_rules():
    with cr.metric_scope() as metrics:
        scope = cog.current_scope()
        scope.record_metric("n", 1)
        scope.record_metric("n", 2, mode="incr")
        assert metrics["n"] == 3
        with pytest.raises(TypeError):  # coglet's type invariant: int stays int until deleted
            scope.record_metric("n", 2.5, mode="incr")
        scope.metrics.delete("n")
        scope.record_metric("n", "x")
        for bad in ("predict_time", "cog.x", "a..b", "_a", "a__b", "1a", "a.b.c.d.e"):
            with pytest.raises(ValueError):
                scope.record_metric(bad, 1)
        with pytest.raises(TypeError):
            scope.record_metric("m", "x", mode="incr")
        with pytest.raises(TypeError):
            scope.record_metric("m", 1, mode="bogus")
        scope.record_metric("gone", 1)
        scope.record_metric("gone", None)
        del scope.metrics["n"]
    assert metrics == {}


# ---------------------------------------------------------------------------------------------
# Cancellation
# ---------------------------------------------------------------------------------------------


def test_raise_in_thread_cancels_sync_prediction():
    loaded = load("cancel")
    loaded.setup()
    outcome = {}

    def work():
        try:
            outcome["result"] = loaded.call(cr.prepare_input(loaded, {"seconds": 30}))
        except cog.CancelationException:
            outcome["result"] = "canceled"

    thread = threading.Thread(target=work)
    thread.start()
    deadline = time.monotonic() + 5
    while loaded.predictor.state != "running" and time.monotonic() < deadline:
        time.sleep(0.005)
    assert cr.raise_in_thread(thread.ident)
    thread.join(5)
    assert not thread.is_alive()
    assert outcome["result"] == "canceled" and loaded.predictor.state == "canceled"
    assert cr.raise_in_thread(thread.ident) is False  # the thread is gone


# ---------------------------------------------------------------------------------------------
# Examples
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["hello-world", "stream", "image", "slow"])
def test_example_schemas_build(name):
    schema = cr.openapi_schema(EXAMPLES / name)
    assert schema["components"]["schemas"]["Input"]["properties"]
    assert (EXAMPLES / name / "README.md").read_text().strip()


def test_example_hello_world():
    loaded = cr.load(EXAMPLES / "hello-world")
    loaded.setup()
    assert loaded.call(cr.prepare_input(loaded, {"text": "vendo", "repeat": 2})) == "hello vendo hello vendo"
    assert loaded.call(cr.prepare_input(loaded, {})) == "hello world"
    with pytest.raises(InvalidInput, match="repeat: fails constraint <= 10"):
        cr.prepare_input(loaded, {"repeat": 11})


def test_example_stream():
    loaded = cr.load(EXAMPLES / "stream")
    assert loaded.is_iterator and loaded.is_generator
    first = list(loaded.call(cr.prepare_input(loaded, {"prompt": "hi", "max_tokens": 5, "delay": 0})))
    again = list(loaded.call(cr.prepare_input(loaded, {"prompt": "hi", "max_tokens": 5, "delay": 0})))
    assert len(first) == 5 and first == again and all(t.startswith(" ") for t in first[1:])


def test_example_image():
    loaded = cr.load(EXAMPLES / "image")
    loaded.setup()
    assert loaded.legacy_optional == {"seed"}
    paths = loaded.call(cr.prepare_input(loaded, {"size": 8, "count": 2, "seed": 7}))
    store = FileStore()
    assert cr.encode_output(paths, store) == ["https://files.test/out-0.png", "https://files.test/out-1.png"]
    png = store.files["out-0.png"]
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and png[12:16] == b"IHDR"
    assert int.from_bytes(png[16:20], "big") == 8 and int.from_bytes(png[20:24], "big") == 8
    again = loaded.call(cr.prepare_input(loaded, {"size": 8, "count": 1, "seed": 7}))
    assert Path(again[0]).read_bytes() == png  # deterministic for a given seed
    assert len(loaded.call(cr.prepare_input(loaded, {"size": 8}))) == 1  # seed omitted: random


def test_example_slow(capfd):
    loaded = cr.load(EXAMPLES / "slow")
    out = loaded.call(cr.prepare_input(loaded, {"steps": 5, "step_s": 0}))
    assert out.startswith("ran 5 steps in ")
    captured = capfd.readouterr()
    assert "finished step 5/5" in captured.out
    # The last progress line must parse the way replicate.Prediction.progress reads logs.
    bars = [line.strip() for line in captured.err.replace("\r", "\n").split("\n") if "%|" in line]
    assert re.match(r"^\s*100%\s*\|.+?\|\s*5/5", bars[-1])


def test_a_url_input_past_the_size_limit_is_refused_and_nothing_is_left(all_inputs, fake_http):
    from deployments.cog_io import FetchLimits

    routes, _ = fake_http
    routes["http://93.184.215.14/big.png"] = FakeResponse(b"x" * (3 << 20))
    def partials():
        return {f for f in os.listdir(tempfile.gettempdir()) if f.endswith("big.png")}

    before = partials()
    with pytest.raises(InvalidInput, match="larger than 1048576 bytes") as e:
        cr.prepare_input(all_inputs, {"text": "hi", "image": "http://93.184.215.14/big.png"},
                         fetch_limits=FetchLimits(max_bytes=1 << 20))
    assert e.value.field == "image"
    assert partials() == before  # the partial download was removed
    routes["http://93.184.215.14/ok.png"] = FakeResponse(b"x" * (1 << 20))
    kwargs = cr.prepare_input(all_inputs, {"text": "hi", "image": "http://93.184.215.14/ok.png"},
                              fetch_limits=FetchLimits(max_bytes=1 << 20))
    assert kwargs["image"].stat().st_size == 1 << 20
    os.unlink(kwargs["image"])


def test_a_url_input_that_trickles_is_refused_at_the_total_deadline(all_inputs):
    """A local server that answers a byte at a time, well inside each read's timeout, forever."""
    import http.server
    import socketserver

    from deployments.cog_io import FetchLimits

    stop = threading.Event()

    class Trickle(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.end_headers()
            while not stop.is_set():
                self.wfile.write(b"x")
                self.wfile.flush()
                time.sleep(0.05)

        def log_message(self, *args):
            pass

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Trickle)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/slow.png"
    try:
        with pytest.raises(InvalidInput, match="took longer than 0.5s"):
            cr.prepare_input(all_inputs, {"text": "hi", "image": url}, allow_private_urls=True,
                             fetch_limits=FetchLimits(timeout_s=0.5))
    finally:
        stop.set()
        server.shutdown()
        server.server_close()


def test_a_name_that_rebinds_between_check_and_connect_is_refused(monkeypatch):
    """DNS rebinding: public for the check, loopback for the connection. The public-only transport
    resolves once, in the connect, and refuses what it would connect to."""
    import socket

    from vendo_core import netpolicy, publicnet

    answers = iter(["93.184.215.14", "127.0.0.1"])

    def getaddrinfo(host, port, *args, **kwargs):
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (next(answers), port))]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    netpolicy.check_public_sync("http://rebind.test/a.png")  # the first answer: public
    with httpx.Client(transport=publicnet.PublicOnlyTransport()) as client:
        with pytest.raises(netpolicy.NonPublicAddress, match="127.0.0.1"):
            client.get("http://rebind.test/a.png")  # the second answer: never connected to


@pytest.mark.parametrize("name, message", [
    ("_invalid", "must start with a letter"),
    ("foo__bar", "must not contain consecutive underscores"),
    ("invalid_", "must end with a letter or digit"),
    (".invalid", "must not start with a dot"),
    ("foo..bar", "empty segments"),
    ("foo.", "must not end with a dot"),
    ("predict_time", "predict_time"),
    ("cog.thing", "cog\\."),
    ("a.b.c.d.e", "at most 4 dot-separated segments"),
    ("a" * 129, "128 characters"),
    ("caf\u00e9", "invalid character"),
])
def test_metric_names_are_refused_with_coglets_messages(name, message):
    """The cases and messages of Cog's own coglet_metrics_validation integration test."""
    with cr.metric_scope() as metrics:
        with pytest.raises(ValueError, match=message):
            cog.current_scope().record_metric(name, 1)
        cog.current_scope().record_metric("valid_name", 1)
    assert metrics == {"valid_name": 1}


def test_accept_on_an_input_that_is_not_a_file_is_refused_at_push(tmp_path):
    """Cog's accept_mime_type_error case: `cog build` refuses it, and so does a push."""
    (tmp_path / "cog.yaml").write_text('build:\n  python_version: "3.12"\npredict: "predict.py:Predictor"\n')
    (tmp_path / "predict.py").write_text(
        "from cog import BasePredictor, Input\n\n\n"
        "class Predictor(BasePredictor):\n"
        "    def predict(self, name: str = Input(description='User name', accept='text/plain')) -> str:\n"
        "        return f'hello {name}'\n")
    with pytest.raises(PackageInvalid, match="accept is only valid on Path or File inputs"):
        cr.openapi_schema(tmp_path)


def test_typeddict_output_has_its_fields_in_the_schema(tmp_path):
    """Cog's typeddict_output case: object fields, NotRequired ones left out of `required`."""
    (tmp_path / "cog.yaml").write_text('build:\n  python_version: "3.12"\npredict: "predict.py:Predictor"\n')
    (tmp_path / "predict.py").write_text(
        "from typing import NotRequired, TypedDict\n\nfrom cog import BasePredictor\n\n\n"
        "class Output(TypedDict):\n    name: str\n    count: NotRequired[int]\n\n\n"
        "class Predictor(BasePredictor):\n    def predict(self) -> Output:\n"
        "        return {'name': 'alice', 'count': 3}\n")
    out = cr.openapi_schema(tmp_path)["components"]["schemas"]["Output"]
    assert out["type"] == "object" and out["required"] == ["name"]
    assert out["properties"]["name"]["type"] == "string" and out["properties"]["count"]["type"] == "integer"
    loaded = cr.load(tmp_path, chdir=False)
    assert cr.encode_output(loaded.call({}), lambda *_: "") == {"name": "alice", "count": 3}


def test_introspection_imports_the_model_once(tmp_path, monkeypatch):
    """A push reads the schema and the traits from one import: top-level code runs once."""
    counter = tmp_path / "imports"
    monkeypatch.setenv("IMPORT_COUNTER", str(counter))
    project = tmp_path / "p"
    project.mkdir()
    (project / "cog.yaml").write_text('predict: "predict.py:Predictor"\n')
    (project / "predict.py").write_text(
        "import os\n\nfrom cog import BasePredictor\n\n"
        "with open(os.environ['IMPORT_COUNTER'], 'a') as f:\n    f.write('x')\n\n\n"
        "class Predictor(BasePredictor):\n    def predict(self, s: str) -> str:\n        return s\n")
    schema, traits = cr.schema_and_traits(project)
    assert "s" in schema["components"]["schemas"]["Input"]["properties"] and traits["method"] == "predict"
    assert counter.read_text() == "x"


def test_a_union_takes_json_values_as_they_are(tmp_path):
    project = write_project(tmp_path, 'predict: "predict.py:Predictor"\n', {"predict.py": (
        "from cog import BasePredictor, Input\n"
        "class Predictor(BasePredictor):\n"
        "    def predict(self, value: str | float | None = Input(default=None)) -> str:\n"
        "        return f'{type(value).__name__}:{value}'\n")})
    loaded = cr.load(project, chdir=False)
    assert [loaded.call(cr.prepare_input(loaded, {"value": v})) for v in (1, 1.5, "a")] == [
        "int:1", "float:1.5", "str:a"]
