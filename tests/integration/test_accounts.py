"""Accounts, organizations and API tokens through the admin API and the CLI, on the real stack:
admins only (404 to others), tokens shown once and stored hashed, revocation and disabling at once
on every router replica, organization members seeing the organization's predictions."""

from __future__ import annotations

import datetime as dt

import httpx
import pytest
import replicate

from tests.integration.test_cli import vendo

pytestmark = pytest.mark.integration


def _as(cluster, token: str) -> httpx.Client:
    return httpx.Client(base_url=cluster.url, timeout=60, headers={"Authorization": f"Bearer {token}"})


def _statuses(cluster, token: str, path: str = "/v1/account", n: int = 20) -> set[int]:
    with _as(cluster, token) as h:
        return {h.get(path).status_code for _ in range(n)}


def test_the_admin_api_does_not_exist_for_others(cluster):
    with cluster.http("bob") as h:
        for method, path in [("GET", "/v1/admin/accounts"), ("POST", "/v1/admin/tokens"),
                             ("DELETE", "/v1/admin/tokens/tok_0000"), ("GET", "/v1/admin/nothing")]:
            r = h.request(method, path, json={})
            assert r.status_code == 404 and r.headers["content-type"].startswith("application/problem+json")
    assert httpx.get(f"{cluster.url}/v1/admin/accounts").status_code == 401
    bob = vendo(cluster, "accounts", "list", user="bob")
    assert bob.returncode == 1 and "not an admin" in bob.stderr
    paths = httpx.get(f"{cluster.url}/openapi.json").json()["paths"]
    assert {"/v1/admin/accounts", "/v1/admin/tokens", "/v1/admin/tokens/{token_id}",
            "/v1/admin/orgs/{org}/members/{username}"} <= set(paths)


def test_accounts_organizations_and_tokens_through_the_cli(cluster, examples):
    made = vendo(cluster, "accounts", "create", "dave")
    assert made.returncode == 0, made.stderr
    dave = made.stdout.strip().splitlines()[-1]
    org = vendo(cluster, "accounts", "create", "acme", "--org")
    assert org.returncode == 0, org.stderr
    assert vendo(cluster, "accounts", "create", "dave").returncode == 1  # taken: 409
    bad = vendo(cluster, "accounts", "create", "no:colons")
    assert bad.returncode == 1 and "username" in bad.stderr

    added = vendo(cluster, "orgs", "add-member", "acme", "dave")
    assert added.returncode == 0 and "acme: dave" in added.stdout
    assert vendo(cluster, "orgs", "add-member", "dave", "acme").returncode == 1  # dave is no organization

    # a named token of the organization, shown once, listed by id, name and prefix, never itself
    created = vendo(cluster, "tokens", "create", "--account", "acme", "--name", "ci")
    assert created.returncode == 0, created.stderr
    acme = created.stdout.strip().splitlines()[-1]
    assert acme.startswith("r8_") and len(acme) > 30
    listed = vendo(cluster, "tokens", "list", "--account", "acme")
    assert listed.returncode == 0 and "ci" in listed.stdout and acme[:7] in listed.stdout
    assert acme not in listed.stdout
    with cluster.http() as h:
        tokens = h.get("/v1/admin/tokens", params={"account": "acme"}).json()["results"]
    ci = next(t for t in tokens if t["name"] == "ci")
    assert ci["last_used_at"] is None

    # the organization's token acts for it; its member sees its predictions with its own token
    org_client = replicate.Client(api_token=acme, base_url=cluster.url)
    assert org_client.accounts.current().username == "acme"
    pred = org_client.predictions.create(version=examples["hello-world"], input={"text": "org"})
    with _as(cluster, dave) as h:
        assert h.get(f"/v1/predictions/{pred.id}").json()["id"] == pred.id
        assert pred.id in [p["id"] for p in h.get("/v1/predictions").json()["results"]]  # listed too
    with cluster.http("bob") as h:
        assert h.get(f"/v1/predictions/{pred.id}").status_code == 404
    with cluster.http() as h:
        ci = next(t for t in h.get("/v1/admin/tokens", params={"account": "acme"}).json()["results"]
                  if t["name"] == "ci")
        assert ci["last_used_at"]
        accounts = {a["username"]: a for a in h.get("/v1/admin/accounts").json()["results"]}
    assert accounts["acme"]["type"] == "organization" and accounts["acme"]["members"] == ["dave"]
    assert accounts["dave"]["orgs"] == ["acme"]

    # leaving the organization ends that at once (the routers' cached accounts are dropped)
    assert vendo(cluster, "orgs", "remove-member", "acme", "dave").returncode == 0
    assert _statuses(cluster, dave, f"/v1/predictions/{pred.id}") == {404}
    with _as(cluster, dave) as h:
        assert pred.id not in [p["id"] for p in h.get("/v1/predictions").json()["results"]]

    # revoking by id: the token is refused at once, on every request, whichever replica serves it
    assert _statuses(cluster, acme) == {200}  # cached on the router
    revoked = vendo(cluster, "tokens", "revoke", ci["id"])
    assert revoked.returncode == 0, revoked.stderr
    assert _statuses(cluster, acme) == {401}
    assert vendo(cluster, "tokens", "revoke", ci["id"]).returncode == 1  # already gone: 404

    # disabling: every token of the account stops at once; enabling brings them back
    assert _statuses(cluster, dave) == {200}
    assert vendo(cluster, "accounts", "disable", "dave").returncode == 0
    assert _statuses(cluster, dave) == {401}
    listed = vendo(cluster, "accounts", "list")
    assert listed.returncode == 0 and "disabled" in listed.stdout
    assert vendo(cluster, "accounts", "disable", "dave", "--enable").returncode == 0
    assert _statuses(cluster, dave) == {200}


def test_token_expiry_and_roles_over_http(cluster):
    with cluster.http() as h:
        r = h.post("/v1/admin/accounts", json={"username": "erin", "roles": ["push", "root"]})
        assert r.status_code == 422 and r.json()["invalid_fields"][0]["field"] == "roles"
        r = h.post("/v1/admin/accounts", json={"username": "erin", "roles": ["push"]})
        assert r.status_code == 201 and r.json()["account"]["roles"] == ["push"]
        past = (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)).isoformat()
        future = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).isoformat()
        expired = h.post("/v1/admin/tokens", json={"account": "erin", "expires_at": past}).json()["token"]
        live = h.post("/v1/admin/tokens", json={"account": "erin", "expires_at": future}).json()
        bad = h.post("/v1/admin/tokens", json={"account": "erin", "expires_at": "next tuesday"})
        assert bad.status_code == 422 and bad.json()["invalid_fields"][0]["field"] == "expires_at"
        assert h.post("/v1/admin/tokens", json={"account": "nobody"}).status_code == 404
        assert h.patch("/v1/admin/accounts/erin", json={"roles": []}).json()["roles"] == []
    assert _statuses(cluster, expired, n=3) == {401}
    assert _statuses(cluster, live["token"], n=3) == {200}
    with _as(cluster, live["token"]) as h:  # the role change is seen at once: no push now
        r = h.post("/v1/models", json={"owner": "erin", "name": "m", "visibility": "private", "hardware": "cpu"})
        assert r.status_code == 403


def test_usage_costs_and_spend_limits(cluster, examples):
    """Each prediction is billed its active seconds at its hardware's price; the usage API and
    `vendo usage` sum them exactly; over its limit an account gets 402 until an admin raises it."""
    import csv
    import io

    from vendo_core.keys import Keys
    from vendo_core.redisconn import connect
    from vendo_core.store import PredictionStore

    with cluster.http() as h:
        frank = h.post("/v1/admin/accounts", json={"username": "frank", "limit_usd": "5"}).json()
    assert frank["account"]["limit_usd"] == 5.0
    client = replicate.Client(api_token=frank["token"], base_url=cluster.url)
    preds = [client.predictions.create(version=examples["hello-world"], input={"text": f"u{i}"}) for i in range(3)]
    for p in preds:
        p.wait()
        assert p.status == "succeeded", p.error

    async def records():
        r = connect(cluster.redis_url)
        try:
            return await PredictionStore(r, Keys(cluster.settings.redis_prefix)).get_many([p.id for p in preds])
        finally:
            await r.aclose()

    import asyncio

    recs = asyncio.run(records())
    assert all(r.hardware == "cpu" and r.price_nanos == 25_000 and r.billed_ms > 0 for r in recs)
    assert all(r.billed_ms == round(r.metrics["predict_time"] * 1000) for r in recs)
    total = sum(r.cost_nanos for r in recs)
    with _as(cluster, frank["token"]) as h:
        usage = h.get("/v1/usage").json()
        assert usage["account"] == "frank" and usage["limit_usd"] == 5.0
        assert usage["total"]["cost_nanos"] == total
        assert usage["results"] == [{"key": "alice/hello-world", "seconds": usage["total"]["seconds"],
                                     "cost_usd": usage["total"]["cost_usd"], "cost_nanos": total}]
        assert h.get("/v1/usage", params={"by": "hardware"}).json()["results"][0]["key"] == "cpu"
        assert h.get("/v1/usage", params={"by": "size"}).json()["invalid_fields"][0]["field"] == "by"
        assert h.get("/v1/usage", params={"since": "yesterday"}).status_code == 422
        assert h.get("/v1/usage", params={"account": "alice"}).status_code == 404  # not an admin
    with cluster.http() as h:
        assert h.get("/v1/usage", params={"account": "frank"}).json()["total"]["cost_nanos"] == total

    env_user = {"frank": frank["token"]}
    cluster.tokens.update(env_user)
    out = vendo(cluster, "usage", "--csv", "--by", "day", user="frank")
    assert out.returncode == 0, out.stderr
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    assert list(rows[0]) == ["account", "day", "seconds", "cost_usd"] and rows[0]["account"] == "frank"
    from decimal import Decimal

    assert sum(Decimal(r["cost_usd"]) for r in rows) == Decimal(total) / 10**9

    # a limit below what is spent: new predictions are refused with 402, saying the limit and spend
    limited = vendo(cluster, "accounts", "set", "frank", "--limit-usd", "0")
    assert limited.returncode == 0 and "limit $0.00" in limited.stdout
    with _as(cluster, frank["token"]) as h:
        r = h.post("/v1/predictions", json={"version": examples["hello-world"], "input": {"text": "x"}})
        assert r.status_code == 402 and "limit" in r.json()["detail"] and "frank" in r.json()["detail"]
    with pytest.raises(replicate.exceptions.ReplicateError) as e:
        client.run(f"alice/hello-world:{examples['hello-world']}", input={"text": "x"})
    assert e.value.status == 402
    assert vendo(cluster, "accounts", "set", "frank", "--limit-usd", "10").returncode == 0
    again = client.predictions.create(version=examples["hello-world"], input={"text": "again"})
    again.wait()
    assert again.status == "succeeded"


def test_a_private_models_setup_and_idle_time_is_billed_to_its_owner_not_its_caller(cluster, examples):
    """An organization's private model run by a member: the member pays the prediction's active
    seconds, the organization the replica's setup and idle time; a public model's replica time is
    nobody's bill."""
    import tempfile
    from pathlib import Path

    from tests.integration.conftest import EXAMPLES
    from tests.integration.test_lifecycle import variant, wait_for

    with cluster.http() as h:
        org = h.post("/v1/admin/accounts", json={"username": "labs", "type": "organization",
                                                  "roles": ["push"]}).json()
        member = h.post("/v1/admin/accounts", json={"username": "gail"}).json()
        assert h.put("/v1/admin/orgs/labs/members/gail").status_code == 200
    cluster.tokens.update(labs=org["token"], gail=member["token"])
    project = variant(EXAMPLES / "hello-world", Path(tempfile.mkdtemp()) / "p", "labs-private")
    vid = cluster.push(project, "labs/private-hello", user="labs", hardware="gpu-small")  # a GPU fraction
    gail = replicate.Client(api_token=member["token"], base_url=cluster.url)
    listed = [f"{m.owner}/{m.name}" for page in replicate.paginate(gail.models.list) for m in page]
    assert "labs/private-hello" in listed  # the organization's private model, listed for its member
    bob = [f"{m.owner}/{m.name}" for page in replicate.paginate(cluster.client("bob").models.list) for m in page]
    assert "labs/private-hello" not in bob
    p = gail.predictions.create(version=vid, input={"text": "member"})
    p.wait()
    assert p.status == "succeeded", p.error
    q = gail.predictions.create(version=examples["hello-world"], input={"text": "public"})
    q.wait()

    def usage(token: str) -> dict[str, int]:
        with _as(cluster, token) as h:
            return {r["key"]: r["cost_nanos"] for r in h.get("/v1/usage").json()["results"]}

    owner_rows = wait_for(lambda: {k: v for k, v in usage(org["token"]).items() if k.endswith("(setup+idle)")},
                          60, "the organization's replica time to be billed")
    assert list(owner_rows) == ["labs/private-hello (setup+idle)"] and owner_rows[
        "labs/private-hello (setup+idle)"] > 0
    caller = usage(member["token"])
    assert set(caller) == {"labs/private-hello", "alice/hello-world"}  # active time only
    with _as(cluster, member["token"]) as h:
        by_hw = {r["key"]: r for r in h.get("/v1/usage", params={"by": "hardware"}).json()["results"]}
    assert set(by_hw) == {"gpu-small", "cpu"}
    # each at its SKU's price: $0.000225/s for a quarter GPU, $0.000025/s for a CPU
    assert by_hw["gpu-small"]["cost_nanos"] == caller["labs/private-hello"]
    assert abs(by_hw["gpu-small"]["cost_nanos"] - by_hw["gpu-small"]["seconds"] * 225_000) <= 1
    assert "alice/hello-world (setup+idle)" not in usage(cluster.tokens["alice"])  # public: nobody's


def test_revocation_and_disabling_reach_every_router_replica_at_once(cluster):
    """With two router replicas, each holding the token's account in its cache, a revocation and
    a disabled account are refused by both on the very next request."""
    from ray import serve

    from router.apps import replica_counts

    cluster.deploy_router(router_replicas=2)
    try:
        assert replica_counts(serve.status().applications["vendo"]).get("running") == 2
        with cluster.http() as h:
            made = h.post("/v1/admin/accounts", json={"username": "hal"}).json()
            other = h.post("/v1/admin/tokens", json={"account": "hal", "name": "second"}).json()
        assert _statuses(cluster, made["token"], n=60) == {200}  # cached on both replicas by now
        assert _statuses(cluster, other["token"], n=60) == {200}
        with cluster.http() as h:
            assert h.delete(f"/v1/admin/tokens/{other['id']}").status_code == 204
        assert _statuses(cluster, other["token"], n=60) == {401}
        assert _statuses(cluster, made["token"], n=20) == {200}  # the account's other token still works
        with cluster.http() as h:
            assert h.patch("/v1/admin/accounts/hal", json={"disabled": True}).json()["disabled"] is True
        assert _statuses(cluster, made["token"], n=60) == {401}
    finally:
        cluster.deploy_router()


def test_rotating_an_accounts_tokens(cluster):
    with cluster.http() as h:
        first = h.post("/v1/admin/accounts", json={"username": "ivy"}).json()["token"]
        second = h.post("/v1/admin/tokens", json={"account": "ivy"}).json()["token"]
    rotated = vendo(cluster, "tokens", "rotate", "ivy")
    assert rotated.returncode == 0, rotated.stderr
    new = rotated.stdout.strip().splitlines()[-1]
    assert _statuses(cluster, first, n=3) == {401} and _statuses(cluster, second, n=3) == {401}
    assert _statuses(cluster, new, n=3) == {200}
    # an account rotating its own tokens: the token doing it is revoked last, and all of them go
    cluster.tokens["ivy"] = new
    with cluster.http() as h:
        assert h.patch("/v1/admin/accounts/ivy", json={"roles": ["admin"]}).status_code == 200
    own = vendo(cluster, "tokens", "rotate", "ivy", user="ivy")
    assert own.returncode == 0, own.stderr
    newest = own.stdout.strip().splitlines()[-1]
    assert _statuses(cluster, new, n=3) == {401} and _statuses(cluster, newest, n=3) == {200}
