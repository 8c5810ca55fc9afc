"""Trainings without Ray: what a training's output makes (the fine-tune version and its id), where
a fine-tune's predictions are sent, and the trainings API's answers to bad requests, in-process."""

from __future__ import annotations

import asyncio
import importlib.util
import json

from router.apps import AppSpec
from tests.unit.test_app import _app
from tests.unit.test_services import SCHEMA, VID
from vendo_core.files import stored_ref
from vendo_core.finetune import finetune_version, training_output, weights_digest, weights_of
from vendo_core.ids import app_name, training_app_name
from vendo_core.keys import weights_key
from vendo_core.records import Version

SHA = "ab" * 32
KEY = weights_key(SHA, "weights.bin")
BASE = Version(id=VID, model="alice/base", openapi_schema=SCHEMA, package_key="packages/x.tar.gz",
               package_digest="d1", hardware="cpu")


def test_weights_are_found_in_either_output_form_and_only_ours():
    assert weights_of(stored_ref(KEY)) == KEY
    assert weights_of({"weights": stored_ref(KEY), "other": 1}) == KEY
    assert weights_of(stored_ref("predictions/p/out.bin")) is None  # a prediction's file: not weights
    assert weights_of("https://example.com/w.bin") is None and weights_of({"x": 1}) is None
    assert weights_digest(KEY) == SHA


def test_a_fine_tune_is_its_base_package_with_weights_and_its_id_is_stable():
    v = finetune_version(BASE, "alice/ft", KEY, "t1")
    assert v.model == "alice/ft" and v.base_version == VID and v.weights_key == KEY
    assert v.package_key == BASE.package_key and v.openapi_schema == SCHEMA and v.hardware == "cpu"
    assert v.id == finetune_version(BASE, "alice/ft", KEY, "t2").id  # same output: same version
    assert v.id != finetune_version(BASE, "alice/other", KEY, "t1").id  # another model: another version
    # a fine-tune of a fine-tune runs on the root base, with the new weights only
    again = finetune_version(v, "alice/ft", weights_key("cd" * 32, "w.bin"), "t3")
    assert again.base_version == VID and again.weights_sha256 == "cd" * 32
    assert training_output("alice/ft", v.id, KEY) == {"version": f"alice/ft:{v.id}", "weights": stored_ref(KEY)}


def test_fine_tunes_run_on_their_base_app_multiplexed_or_through_replicate_weights():
    ft = finetune_version(BASE, "alice/ft", KEY, "t1")
    spec = AppSpec.finetune_of(AppSpec.of(BASE), ft)
    assert spec.app == app_name(VID) and spec.finetune == ft.id and spec.weights_input is None
    schema = json.loads(json.dumps(SCHEMA))
    schema["components"]["schemas"]["Input"]["properties"]["replicate_weights"] = {"type": "string", "format": "uri"}
    base = BASE.model_copy(update={"openapi_schema": schema})
    spec = AppSpec.finetune_of(AppSpec.of(base), finetune_version(base, "alice/ft", KEY, "t1"))
    assert spec.app == app_name(VID) and spec.finetune is None and spec.weights_input == ("replicate_weights", KEY)
    train = AppSpec.training(BASE)
    assert train.app == training_app_name(VID) and train.mode == "train" and train.app != app_name(VID)


def test_training_requests_are_checked_before_anything_runs(tmp_path):
    async def go():
        client, _ = await _app(tmp_path)
        async with client:
            url = f"/v1/models/alice/echo/versions/{VID}/trainings"
            r = await client.post(url, json={"input": {}})
            assert r.status_code == 422 and r.json()["invalid_fields"][0]["field"] == "destination"
            r = await client.post(url, json={"destination": "nobody/nothing", "input": {}})
            assert r.status_code == 404 and r.json()["detail"] == "The specified training destination does not exist"
            r = await client.post(url, json={"destination": "alice/echo:abc", "input": {}})
            assert r.status_code == 422 and r.json()["invalid_fields"][0]["field"] == "destination"
            r = await client.post(url, json={"destination": "alice/echo", "input": {}})
            assert r.status_code == 422 and "no `train` target" in r.json()["detail"]
            r = await client.get("/v1/trainings/aaaaaaaaaaaaaaaaaaaaaaaaaa")
            assert r.status_code == 404
            assert (await client.get("/v1/trainings")).json()["results"] == []
    asyncio.run(go())


def test_the_phrasebook_reads_its_weights_from_a_path_as_from_a_url(tmp_path):
    spec = importlib.util.spec_from_file_location("phrasebook_predict", "examples/phrasebook/predict.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    path = tmp_path / "book.json"
    path.write_text(json.dumps({"name": "t", "words": {"cat": "Katze"}}))
    p = module.Predictor()
    p.setup(str(path))
    assert p.predict(text="cat dog") == "Katze dog"
    p.setup(None)
    assert p.predict(text="cat dog") == "chat chien"
