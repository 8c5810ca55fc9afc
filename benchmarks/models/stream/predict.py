"""Yields `time.time()` of each yield, as text, after a lead-in that lets the client attach."""

import time
from typing import Iterator

from cog import BaseRunner, Input


class Runner(BaseRunner):
    def run(
        self,
        count: int = Input(description="Items to yield", default=8, ge=1, le=1000),
        lead_s: float = Input(description="Seconds before the first yield", default=0.2, ge=0, le=10),
        gap_s: float = Input(description="Seconds between yields", default=0.02, ge=0, le=10),
    ) -> Iterator[str]:
        time.sleep(lead_s)
        for i in range(count):
            if i:
                time.sleep(gap_s)
            yield f"{time.time():.6f}"
