"""A real headless browser for tests: Debian's Chromium driven by Playwright with
`executable_path` (no browser is downloaded). Tests skip, saying why, only where none is installed."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

CANDIDATES = ("chromium", "chromium-browser", "google-chrome")


def chromium_path() -> str | None:
    wanted = os.environ.get("VENDO_TEST_CHROMIUM")
    if wanted:
        return wanted
    for name in CANDIDATES:
        if found := shutil.which(name):
            return found
    return None


@contextmanager
def browser() -> Iterator[object]:
    path = chromium_path()
    if path is None:
        pytest.skip("no Chromium here: `apt-get install chromium` (.ci/run does it), or set VENDO_TEST_CHROMIUM")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=path, headless=True,
                               args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"])
        try:
            yield b
        finally:
            b.close()
