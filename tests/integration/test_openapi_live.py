"""schemathesis over the routes the in-process unit run cannot reach (they need Redis: model
listing, deployments, files, webhook secrets, usage), against the real stack: no 5xx, and every
answer as the document says."""

from __future__ import annotations

import pytest
import schemathesis
from schemathesis import GenerationMode

from tests.unit.test_openapi import NEEDS_REDIS, _fuzz

pytestmark = pytest.mark.integration


@pytest.mark.timeout(300)
def test_schemathesis_on_the_real_stack(cluster, examples):
    schema = schemathesis.openapi.from_url(f"{cluster.url}/openapi.json")
    failures: dict[str, list[str]] = {}
    seen = set()
    for result in schema.get_all_operations():
        op = result.ok()
        key = (op.method.upper(), op.path)
        if key not in NEEDS_REDIS:
            continue
        seen.add(key)
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            if failed := _fuzz(op, mode, cluster.tokens["bob"]):
                failures[f"{op.label} ({mode.value})"] = failed
    assert seen == set(NEEDS_REDIS)
    assert failures == {}, "\n\n".join(f"{k}:\n" + "\n".join(dict.fromkeys(v)) for k, v in failures.items())
