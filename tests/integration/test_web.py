"""The web app in a real browser (Debian's Chromium, headless, driven by Playwright) against the
test cluster: sign in with a token, the dashboard, prediction pages with image and streamed text
outputs, cancel, share and open signed out, another account's 404, CSRF, sign out and revocation."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.browser import browser

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def chrome():
    with browser() as b:
        yield b


# bypass_csp: Playwright's waits evaluate strings in the page, which vendo's CSP (no eval) refuses;
# the pages' own script runs under it either way, and the header itself is asserted
def sign_in(chrome, cluster, user: str = "alice", token: str | None = None):
    context = chrome.new_context(base_url=cluster.url, viewport={"width": 1100, "height": 900}, bypass_csp=True)
    page = context.new_page()
    page.on("pageerror", lambda e: print(f"page error: {e}"))  # shown with a failure
    page.on("console", lambda m: print(f"console {m.type}: {m.text}"))
    page.goto("/login")
    page.get_by_label("API token").fill(token or cluster.tokens[user])
    page.get_by_role("button", name="Sign in").click()
    return context, page


def test_sign_in_dashboard_and_sign_out(chrome, cluster, examples):
    c = cluster.client()
    made = c.predictions.create(version=examples["hello-world"], input={"text": "dash"})
    made.wait()
    ctx = chrome.new_context(base_url=cluster.url, bypass_csp=True)
    page = ctx.new_page()
    page.goto("/dashboard")  # signed out: to the sign-in page, coming back after
    assert page.url.startswith(f"{cluster.url}/login?next=%2Fdashboard")
    page.get_by_label("API token").fill("r8_not-a-token")
    page.get_by_role("button", name="Sign in").click()
    assert page.get_by_role("alert").inner_text() == "That API token is not valid."
    page.get_by_label("API token").fill(cluster.tokens["alice"])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{cluster.url}/dashboard")
    cookie = next(k for k in ctx.cookies() if k["name"] == "vendo_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"
    assert "Your usage for the current billing period is $" in page.locator(".notice").inner_text()
    row = page.locator(f"tr[data-id='{made.id}']")
    cells = row.locator("td").all_inner_texts()
    assert cells[1] == "alice/hello-world" and cells[2] == "API" and cells[3] == "succeeded"
    assert re.fullmatch(r"\d+\.\d\ds", cells[4]) and cells[5].endswith("ago")
    headers = page.goto("/dashboard").headers
    assert "script-src 'self'" in headers["content-security-policy"] and "unsafe-inline" not in headers[
        "content-security-policy"]

    # the session reaches the API in the browser's way (cookie), and a write must carry the CSRF token
    sid = cookie["value"]
    with httpx.Client(base_url=cluster.url, cookies={"vendo_session": sid}) as h:
        assert h.get(f"/v1/predictions/{made.id}").json()["id"] == made.id
        refused = h.post(f"/v1/predictions/{made.id}/share")
        assert refused.status_code == 403 and "CSRF" in refused.json()["detail"]
        csrf = page.locator("body").get_attribute("data-csrf")
        web = h.post("/v1/predictions", json={"version": examples["hello-world"], "input": {"text": "w"}},
                     headers={"X-CSRF-Token": csrf, "Prefer": "wait"})
        assert web.status_code == 201 and web.json()["source"] == "web"
    page.goto("/dashboard")
    assert page.locator(f"tr[data-id='{web.json()['id']}'] td").nth(2).inner_text() == "Web"
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(f"{cluster.url}/login")
    with httpx.Client(base_url=cluster.url, cookies={"vendo_session": sid}) as h:
        assert h.get("/v1/predictions").status_code == 401  # the session is gone server-side
    page.goto("/dashboard")
    assert "/login" in page.url
    ctx.close()


def test_image_outputs_show_and_streamed_text_appears_while_running(chrome, cluster, examples):
    c = cluster.client()
    img = c.predictions.create(version=examples["image"], input={"size": 32, "count": 2, "seed": 3})
    img.wait()
    ctx, page = sign_in(chrome, cluster)
    page.goto(f"/p/{img.id}")
    images = page.locator("#output img")
    assert images.count() == 2
    page.wait_for_function("[...document.querySelectorAll('#output img')].every(i => i.complete && i.naturalWidth > 0)")
    assert page.locator("#status").inner_text() == "succeeded"

    p = c.predictions.create(version=examples["stream"], input={"prompt": "hi", "max_tokens": 30, "delay": 0.2})
    page.goto(f"/p/{p.id}")
    page.wait_for_function("document.querySelector('#output pre') && "
                           "document.querySelector('#output pre').textContent.split(' ').length >= 2")
    partial = page.locator("#output pre").inner_text()
    p.reload()
    assert p.status in ("starting", "processing"), "the text appeared only after the end"
    page.wait_for_function("document.querySelector('#status').textContent === 'succeeded'", timeout=60_000)
    final = page.locator("#output pre").inner_text()
    assert final.startswith(partial.strip()) and len(final.split()) == 30
    ctx.close()


def test_cancel_share_and_other_accounts(chrome, cluster, examples):
    c = cluster.client()
    slow = c.predictions.create(version=examples["slow"], input={"steps": 600, "step_s": 0.1})
    ctx, page = sign_in(chrome, cluster)
    page.goto(f"/p/{slow.id}")
    page.get_by_role("button", name="Cancel").click()
    page.wait_for_function("document.querySelector('#status').textContent === 'canceled'", timeout=60_000)
    slow.reload()
    assert slow.status == "canceled"

    page.get_by_role("button", name="Share").click()
    page.wait_for_selector("#share[aria-pressed='true']")
    anon = chrome.new_context(base_url=cluster.url, bypass_csp=True)
    shared = anon.new_page()
    resp = shared.goto(f"/p/{slow.id}")
    assert resp.status == 200 and shared.locator("#status").inner_text() == "canceled"
    assert shared.get_by_role("button", name="Cancel").count() == 0 and shared.locator("#share").count() == 0

    bob_ctx, bob = sign_in(chrome, cluster, "bob")
    assert bob.goto(f"/p/{slow.id}").status == 200  # shared: anyone may read it
    page.get_by_role("button", name="Unshare").click()
    page.wait_for_selector("#share[aria-pressed='false']")
    assert shared.goto(f"/p/{slow.id}").status == 404
    assert bob.goto(f"/p/{slow.id}").status == 404
    assert "not yours to see" in bob.locator("main").inner_text()
    anon.close()
    bob_ctx.close()
    ctx.close()


def test_revoking_the_token_ends_its_sessions(chrome, cluster):
    with cluster.http() as h:
        made = h.post("/v1/admin/tokens", json={"account": "alice", "name": "web-revoke"}).json()
    ctx, page = sign_in(chrome, cluster, token=made["token"])
    page.wait_for_url(f"{cluster.url}/dashboard")
    with cluster.http() as h:
        assert h.delete(f"/v1/admin/tokens/{made['id']}").status_code == 204
    page.goto("/dashboard")
    assert "/login" in page.url
    ctx.close()


def _shot(page, name: str) -> None:
    """With VENDO_SCREENSHOTS=DIR, keep a screenshot of this page (the README's come from here)."""
    import os

    where = os.environ.get("VENDO_SCREENSHOTS")
    if where:
        page.screenshot(path=f"{where}/{name}.png", full_page=True)


def test_the_model_form_runs_every_input_type_and_shows_422_at_its_field(chrome, cluster, tmp_path):
    from tests.integration.conftest import FIXTURES

    vid = cluster.push(FIXTURES / "all_inputs", "alice/all-inputs")
    ctx, page = sign_in(chrome, cluster)
    page.goto("/alice/all-inputs")
    assert page.locator("#run-form").get_attribute("data-version") == vid
    # a control per Cog type, each labelled with the input's name
    assert page.get_by_label("text", exact=True).get_attribute("type") == "text"
    assert page.get_by_label("times", exact=True).get_attribute("type") == "number"
    assert page.get_by_label("times slider").get_attribute("type") == "range"
    assert page.get_by_label("flag").get_attribute("type") == "checkbox"
    assert page.get_by_label("style").evaluate("e => e.tagName") == "SELECT"
    assert page.get_by_label("token").get_attribute("type") == "password"
    assert page.get_by_label("image").get_attribute("type") == "file"
    assert page.get_by_label("files").get_attribute("multiple") is not None
    assert page.get_by_label("tags").evaluate("e => e.tagName") == "TEXTAREA"
    assert page.get_by_label("times", exact=True).input_value() == "2"  # defaults filled

    page.get_by_role("button", name="Run").click()  # `text` is required and left empty
    error = page.locator(".field[data-field='text'] .field-error")
    error.wait_for(state="visible")
    assert "required" in error.inner_text()

    page.get_by_label("text", exact=True).fill("from the form")
    page.get_by_label("times slider").fill("4")
    assert page.get_by_label("times", exact=True).input_value() == "4"
    page.get_by_label("style").select_option("fancy")
    page.get_by_label("level").select_option("3")
    page.get_by_label("flag").check()
    page.get_by_label("token").fill("s3cret")
    page.get_by_label("tags").fill("x\ny")
    picture = tmp_path / "picture.txt"
    picture.write_text("pixels")
    page.get_by_label("image").set_input_files(str(picture))
    page.get_by_role("button", name="Run").click()
    page.wait_for_url(re.compile(r".*/p/[a-z0-9]+$"))
    page.wait_for_function("document.querySelector('#status').textContent === 'succeeded'", timeout=90_000)
    out = page.locator("#output pre").inner_text()
    for expected in ('"text": "from the form"', '"times": 4', '"style": "fancy"', '"level": 3', '"flag": true',
                     '"token": "s3cret"', '"image": "pixels"', '"x"'):
        assert expected in out, out
    pid = page.url.rsplit("/", 1)[1]
    page.goto("/dashboard")
    assert page.locator(f"tr[data-id='{pid}'] td").nth(2).inner_text() == "Web"
    ctx.close()


def test_run_the_image_and_streaming_examples_from_their_pages(chrome, cluster, examples):
    ctx, page = sign_in(chrome, cluster)
    page.goto("/alice/image")
    page.get_by_label("size", exact=True).fill("48")
    page.get_by_label("count", exact=True).fill("2")
    _shot(page, "model-page")
    page.get_by_role("button", name="Run").click()
    page.wait_for_url(re.compile(r".*/p/[a-z0-9]+$"))
    page.wait_for_function("document.querySelectorAll('#output img').length === 2 && "
                           "[...document.querySelectorAll('#output img')].every(i => i.complete && i.naturalWidth > 0)",
                           timeout=90_000)
    _shot(page, "prediction-page")

    page.goto("/alice/stream")
    page.get_by_label("prompt", exact=True).fill("hello")
    page.get_by_label("max_tokens", exact=True).fill("25")
    page.get_by_label("delay", exact=True).fill("0.2")
    page.get_by_role("button", name="Run").click()
    page.wait_for_url(re.compile(r".*/p/[a-z0-9]+$"))
    page.wait_for_function("document.querySelector('#output pre') && "
                           "document.querySelector('#output pre').textContent.trim().split(' ').length >= 2")
    assert page.locator("#status").inner_text() != "succeeded"  # text while it runs, not after
    page.wait_for_function("document.querySelector('#status').textContent === 'succeeded'", timeout=60_000)
    assert len(page.locator("#output pre").inner_text().split()) == 25
    page.goto("/dashboard")
    _shot(page, "dashboard")
    ctx.close()


def test_another_account_sees_404_for_a_private_model(chrome, cluster, tmp_path):
    from tests.integration.conftest import EXAMPLES
    from tests.integration.test_lifecycle import variant

    cluster.push(variant(EXAMPLES / "hello-world", tmp_path / "h", "web-private"), "alice/web-private")
    ctx, page = sign_in(chrome, cluster, "bob")
    assert page.goto("/alice/web-private").status == 404
    assert page.goto("/alice/hello-world").status == 200  # public
    page.goto("/")  # searched, since the whole suite's models may run past a first page
    page.get_by_label("Search models").fill("hello-world")
    page.get_by_role("button", name="Search").click()
    assert page.locator("a[href='/alice/hello-world']").count() == 1
    page.goto("/?q=web-private")
    assert page.locator("a[href='/alice/web-private']").count() == 0  # not on bob's Explore either
    page.goto("/?q=stream")
    assert page.locator("a[href='/alice/stream']").count() == 1
    assert page.locator("a[href='/alice/hello-world']").count() == 0
    ctx.close()
    ctx, page = sign_in(chrome, cluster)
    page.goto("/?q=web-private")
    assert page.locator("a[href='/alice/web-private']").count() == 1  # alice's own
    ctx.close()


def test_account_page_creates_a_token_shown_once_and_revokes_it(chrome, cluster):
    ctx, page = sign_in(chrome, cluster)
    page.goto("/account")
    assert page.locator("#webhook-secret").inner_text().startswith("whsec_")
    page.get_by_label("Token name").fill("laptop")
    page.get_by_role("button", name="Create token").click()
    token = page.locator("#new-token").inner_text()
    assert len(token) > 20
    page.goto("/account")
    assert page.locator("#new-token").count() == 0  # shown once
    other_ctx, other = sign_in(chrome, cluster, token=token)
    other.wait_for_url(f"{cluster.url}/dashboard")
    page.get_by_role("button", name="Revoke laptop").click()
    page.wait_for_url(f"{cluster.url}/account")
    assert page.locator("tr[data-token]").filter(has_text="laptop").count() == 0
    other.goto("/dashboard")
    assert "/login" in other.url  # its session ended with it
    assert httpx.get(f"{cluster.url}/v1/account", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    other_ctx.close()
    ctx.close()


def test_deployments_page_shows_warm_and_cold_instances(chrome, cluster, examples):
    from tests.integration.test_lifecycle import wait_for

    c = cluster.client()
    vid = examples["hello-world"]
    c.deployments.create(name="web-cold", model="alice/hello-world", version=vid, hardware="cpu",
                         min_instances=0, max_instances=1)
    c.deployments.create(name="web-warm", model="alice/hello-world", version=vid, hardware="cpu",
                         min_instances=1, max_instances=1)
    try:
        ctx, page = sign_in(chrome, cluster)

        def row(name: str) -> str:
            page.goto("/deployments")
            return page.locator(f"tr[data-deployment='alice/{name}']").inner_text()

        assert "cold" in row("web-cold") and "0 running" in row("web-cold")
        wait_for(lambda: "warm" in row("web-warm") and "1 running" in row("web-warm"), 120, "a warm instance")
        bob_ctx, bob = sign_in(chrome, cluster, "bob")
        bob.goto("/deployments")
        assert bob.locator("tr[data-deployment]").count() == 0  # only their owners see them
        bob_ctx.close()
        ctx.close()
    finally:
        with cluster.http() as h:
            for name in ("web-cold", "web-warm"):
                h.delete(f"/v1/deployments/alice/{name}")


def test_train_from_the_model_page_and_run_the_new_version(chrome, cluster, tmp_path):
    from tests.integration.conftest import EXAMPLES

    cluster.push(EXAMPLES / "phrasebook", "alice/phrasebook", visibility="public")
    c = cluster.client()
    try:
        c.models.create("alice", "web-phrasebook", visibility="private", hardware="cpu")
    except Exception:  # noqa: BLE001 - made by an earlier run on this cluster
        pass
    ctx, page = sign_in(chrome, cluster)
    page.goto("/alice/phrasebook")
    assert page.get_by_label("destination").input_value() == "alice/phrasebook-trained"
    assert page.locator("#train-form [name='lowercase']").count() == 1  # a bool is one box, nothing more
    page.get_by_label("destination").fill("alice/nowhere")
    words = tmp_path / "words.txt"
    words.write_text("cat\tgato\nblack\tnegro\n")
    page.get_by_label("words").set_input_files(str(words))
    page.get_by_role("button", name="Train").click()
    error = page.locator("#train-form .field[data-field='destination'] .field-error")
    error.wait_for(state="visible")
    assert error.inner_text() == "The specified training destination does not exist"
    page.get_by_label("destination").fill("alice/web-phrasebook")
    page.get_by_label("name", exact=True).fill("spanish")
    _shot(page, "train-form")
    page.get_by_role("button", name="Train").click()
    page.wait_for_url(re.compile(r".*/p/[a-z0-9]+$"))
    page.wait_for_function("document.querySelector('#status').textContent === 'succeeded'", timeout=90_000)
    assert "learned 2 words" in page.locator("#logs").inner_text()
    page.locator("#new-version").click()
    page.wait_for_url(f"{cluster.url}/alice/web-phrasebook")
    page.get_by_label("text", exact=True).fill("black cat")
    page.get_by_role("button", name="Run").click()
    page.wait_for_url(re.compile(r".*/p/[a-z0-9]+$"))
    page.wait_for_function("document.querySelector('#status').textContent === 'succeeded'", timeout=90_000)
    assert page.locator("#output pre").inner_text() == "negro gato"
    ctx.close()


def test_a_real_pretrained_model_answers_in_the_browser_and_through_the_client(chrome, cluster):
    from tests.integration.conftest import EXAMPLES

    vid = cluster.push(EXAMPLES / "similarity", "alice/similarity", visibility="public")
    out = cluster.client().run(f"alice/similarity:{vid}", input={
        "sentence": "A person eats a meal.", "candidates": "A man is riding a horse.\nA man is eating food."})
    assert out["ranked"] == ["A man is eating food.", "A man is riding a horse."]
    assert out["scores"][0] > 0.5 > out["scores"][1]
    ctx, page = sign_in(chrome, cluster)
    page.goto("/alice/similarity")
    page.get_by_label("sentence", exact=True).fill("Someone is playing music.")
    page.get_by_role("button", name="Run").click()
    page.wait_for_url(re.compile(r".*/p/[a-z0-9]+$"))
    page.wait_for_function("document.querySelector('#status').textContent === 'succeeded'", timeout=120_000)
    shown = page.locator("#output pre").inner_text()
    assert shown.index("A woman is playing the violin.") < shown.index("A man is riding a horse.")
    _shot(page, "similarity")
    ctx.close()
