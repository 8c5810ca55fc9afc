"""The `vendo` CLI against the running cluster, as a user types it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.integration.conftest import EXAMPLES

pytestmark = pytest.mark.integration


def vendo(cluster, *args: str, user: str = "alice") -> subprocess.CompletedProcess:
    env = dict(os.environ, VENDO_URL=cluster.url, VENDO_API_TOKEN=cluster.tokens[user], COLUMNS="200")
    return subprocess.run([sys.executable, "-m", "cluster.cli", *args], env=env, capture_output=True,
                          text=True, timeout=300, check=False)


def test_push_is_idempotent_and_prints_the_version(cluster, tmp_path):
    from tests.integration.test_lifecycle import variant

    project = variant(EXAMPLES / "hello-world", tmp_path / "p", "cli")
    first = vendo(cluster, "push", str(project), "alice/cli-hello", "--visibility", "public")
    assert first.returncode == 0, first.stderr
    vid = first.stdout.strip()
    assert len(vid) == 64
    again = vendo(cluster, "push", str(project), "alice/cli-hello")
    assert again.stdout.strip() == vid


def test_run_prints_output_logs_and_downloads_files(cluster, examples, tmp_path):
    r = vendo(cluster, "run", "alice/hello-world", "-i", "text=cli", "-i", "repeat=2")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "hello cli hello cli"
    r = vendo(cluster, "run", "alice/slow", "-i", "steps=4", "-i", "step_s=0.05")
    assert r.returncode == 0, r.stderr
    assert "ran 4 steps" in r.stdout and "finished step 4/4" in r.stderr
    out = tmp_path / "out"
    r = vendo(cluster, "run", f"alice/image:{examples['image']}", "-i", "count=2", "-i", "size=16", "-o", str(out))
    assert r.returncode == 0, r.stderr
    files = json.loads(r.stdout)
    assert len(files) == 2
    for f in files:
        assert open(f, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_run_with_bad_input_fails_with_the_field(cluster, examples):
    r = vendo(cluster, "run", "alice/hello-world", "-i", "repeat=50")
    assert r.returncode == 1
    assert "repeat" in r.stderr and "422" in r.stderr


def test_status_and_predictions(cluster, examples):
    r = vendo(cluster, "status")
    assert r.returncode == 0, r.stderr
    assert "alice/hello-world" in r.stdout and "s3://vendo-test" in r.stdout
    r = vendo(cluster, "predictions", "list")
    assert r.returncode == 0 and "alice/" in r.stdout
    with cluster.http() as h:
        pid = h.post("/v1/predictions", json={"version": examples["slow"], "input": {"steps": 300}}).json()["id"]
    r = vendo(cluster, "predictions", "cancel", pid)
    assert r.returncode == 0 and f"{pid}: canceled" in r.stdout
    r = vendo(cluster, "predictions", "get", pid)
    assert json.loads(r.stdout)["status"] == "canceled"
    r = vendo(cluster, "predictions", "get", pid, user="bob")
    assert r.returncode == 1 and "404" in r.stderr


def test_push_needs_a_role_granted_with_the_cli(cluster, tmp_path):
    """A new account may run models but not publish them until an admin grants it `push`."""
    from tests.integration.test_lifecycle import variant

    env = dict(os.environ, VENDO_URL=cluster.url, VENDO_API_TOKEN=cluster.tokens["alice"], COLUMNS="200")

    def admin(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "cluster.cli", "accounts", *args], env=env,
                              capture_output=True, text=True, timeout=60, check=False)

    made = admin("create", "carol")
    assert made.returncode == 0, made.stderr
    cluster.tokens["carol"] = made.stdout.strip()
    project = variant(EXAMPLES / "hello-world", tmp_path / "p", "carol")
    refused = vendo(cluster, "push", str(project), "carol/hello", user="carol")
    assert refused.returncode == 1 and "needs the 'push' role" in refused.stderr
    with cluster.http("carol") as h:
        r = h.post("/v1/models", json={"owner": "carol", "name": "m", "visibility": "private", "hardware": "cpu"})
        assert r.status_code == 403 and "push" in r.json()["detail"]
        assert h.get("/v1/models/carol/m").status_code == 404  # nothing was created
        status = h.get("/v1/status").json()
        assert status["redis"] is None and status["storage"] is None  # hosts and buckets: admins only
    with cluster.http("alice") as h:
        assert h.get("/v1/status").json()["redis"].startswith("redis://")
        assert cluster.redis_url.split("@")[0].split(":")[-1] not in h.get("/v1/status").text

    granted = admin("grant", "carol", "push")
    assert granted.returncode == 0 and "carol: push" in granted.stdout
    # a role change reaches every router replica at once (their cached accounts are dropped)
    pushed = vendo(cluster, "push", str(project), "carol/hello", user="carol")
    assert pushed.returncode == 0, pushed.stderr
    assert admin("grant", "carol", "root").returncode == 1  # no such role
    assert admin("grant", "nobody-here", "push").returncode == 1  # no such account
