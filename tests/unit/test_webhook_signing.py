"""Webhook signing, secrets, create-time fields and the retry schedule (no Redis, no Ray).
Signatures are checked with the official client's `replicate.webhooks.validate`."""

from __future__ import annotations

import asyncio
import base64
import json

import pytest
from replicate.webhook import InvalidSignatureError, Webhooks, WebhookSigningSecret

from router.ratelimit import CREATES, REQUESTS, bucket_for
from router.webhook_delivery import entry_time
from router.webhooks import (
    WebhookPolicy,
    new_secret,
    retry_offsets,
    signed_headers,
    wants,
)
from vendo_core.errors import InvalidRequest, RateLimited
from vendo_core.records import Prediction


def test_secret_shape():
    secret = new_secret()
    prefix, b64 = secret.split("_")  # the client splits on "_" and needs exactly two parts
    assert prefix == "whsec"
    assert len(base64.b64decode(b64, validate=True)) == 32
    assert new_secret() != secret


def test_official_client_accepts_signature():
    secret = new_secret()
    body = json.dumps({"id": "abc", "status": "succeeded", "output": ["ü", "/+="]}).encode()
    headers = signed_headers(secret, "msg_abc_completed", body)
    assert headers["webhook-signature"].startswith("v1,")
    Webhooks.validate(headers=headers, body=body.decode(), secret=WebhookSigningSecret(key=secret),
                      tolerance=60)
    # header names are matched case-insensitively by the client
    upper = {k.title(): v for k, v in headers.items()}
    Webhooks.validate(headers=upper, body=body.decode(), secret=WebhookSigningSecret(key=secret))


def test_signature_binds_body_id_timestamp_and_secret():
    secret = new_secret()
    body = b'{"id":"abc"}'
    headers = signed_headers(secret, "msg_1", body, timestamp=1_700_000_000)
    for tampered in (
        dict(headers, **{"webhook-id": "msg_2"}),
        dict(headers, **{"webhook-timestamp": "1700000001"}),
    ):
        with pytest.raises(InvalidSignatureError):
            Webhooks.validate(headers=tampered, body=body.decode(), secret=WebhookSigningSecret(key=secret))
    with pytest.raises(InvalidSignatureError):
        Webhooks.validate(headers=headers, body='{"id":"abd"}', secret=WebhookSigningSecret(key=secret))
    with pytest.raises(InvalidSignatureError):
        Webhooks.validate(headers=headers, body=body.decode(), secret=WebhookSigningSecret(key=new_secret()))


def test_retry_schedule_ends_about_a_minute_after_completion():
    assert retry_offsets(1.0, 7) == [0, 1, 3, 7, 15, 31, 63]
    assert retry_offsets(0.2, 3) == pytest.approx([0, 0.2, 0.6])
    assert retry_offsets(1.0, 0) == [0]  # always one try
    assert entry_time("1700000000123-4") == pytest.approx(1_700_000_000.123)


def _prediction(**fields) -> Prediction:
    return Prediction(id="p", account="a", model="o/m", version="v", status="starting", created_at="t",
                      created_ts=0, **fields)


def test_event_filter():
    rec = _prediction(webhook="https://example.com/h")
    assert all(wants(rec, e) for e in ("start", "output", "logs", "completed"))
    rec.webhook_events_filter = ["completed"]
    assert wants(rec, "completed") and not wants(rec, "start") and not wants(rec, "output")
    assert not wants(_prediction(webhook_completed="https://example.com/h"), "completed")


def fields(body: dict, allow_private: bool = False) -> dict:
    return asyncio.run(WebhookPolicy(allow_private).record_fields(body))


def test_create_fields_are_validated():
    assert fields({}) == {}
    out = fields({"webhook": "http://127.0.0.1:9/h", "webhook_events_filter": ["completed", "start", "start"],
                  "webhook_completed": "https://127.0.0.1/done"}, allow_private=True)
    assert out == {"webhook": "http://127.0.0.1:9/h", "webhook_events_filter": ["start", "completed"],
                   "webhook_completed": "https://127.0.0.1/done"}
    cases = [
        ({"webhook_events_filter": ["start", "finished"]}, "webhook_events_filter", "finished"),
        ({"webhook_events_filter": "completed"}, "webhook_events_filter", "list"),
        ({"webhook": "ftp://example.com/x"}, "webhook", "http"),
        ({"webhook": 5}, "webhook", "URL"),
        ({"webhook": "http:///nohost"}, "webhook", "host"),
        ({"webhook_completed": "http://example.com:99999/"}, "webhook_completed", "URL"),
    ]
    for body, field, words in cases:
        with pytest.raises(InvalidRequest) as e:
            fields(body, allow_private=True)
        assert e.value.field == field and words in e.value.reason, (body, e.value.reason)
        assert e.value.problem()["invalid_fields"][0]["field"] == field


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:8000/hook", "http://localhost/hook", "http://10.1.2.3/", "http://192.168.0.10/",
    "http://172.16.5.4/", "http://169.254.169.254/latest/meta-data", "http://[::1]:80/",
    "http://[fe80::1]/", "http://[::ffff:127.0.0.1]/", "http://0.0.0.0/", "http://100.64.0.1/",
    "http://240.0.0.1/",
])
def test_non_public_destinations_are_refused(url):
    with pytest.raises(InvalidRequest) as e:
        fields({"webhook": url})
    assert e.value.field == "webhook" and e.value.status == 422
    with pytest.raises(InvalidRequest) as e:
        fields({"webhook_completed": url})
    assert e.value.field == "webhook_completed"


def test_public_literal_addresses_pass():
    assert fields({"webhook": "https://8.8.8.8/h"})["webhook"] == "https://8.8.8.8/h"
    assert fields({"webhook": "https://[2001:4860:4860::8888]/h"})


def test_rate_limit_buckets_and_error():
    assert bucket_for("POST", "/v1/predictions") == CREATES
    assert bucket_for("POST", "/v1/models/a/b/predictions") == CREATES
    assert bucket_for("POST", "/v1/deployments/a/b/predictions") == CREATES
    assert bucket_for("GET", "/v1/predictions") == REQUESTS
    assert bucket_for("POST", "/v1/predictions/abc/cancel") == REQUESTS
    e = RateLimited(3)
    assert e.status == 429 and e.headers() == {"Retry-After": "3"}
    assert e.problem()["detail"] == "Request was throttled. Expected available in 3 seconds."
