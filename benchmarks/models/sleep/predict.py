"""Sleeps: the replica is busy, the host CPU is not (like a model waiting on its GPU)."""

import time

from cog import BaseRunner, Input


class Runner(BaseRunner):
    def run(self, wait_s: float = Input(description="Seconds to wait", default=0.05, ge=0, le=5)) -> str:
        time.sleep(wait_s)
        return "ok"
