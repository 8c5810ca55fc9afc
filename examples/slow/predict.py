"""A model that takes its time and talks while it works: progress bars and log lines."""

import sys
import time

from cog import BaseRunner, Input
from tqdm import tqdm


class Runner(BaseRunner):
    def run(
        self,
        steps: int = Input(description="Number of steps to run", default=20, ge=1, le=1000),
        step_s: float = Input(description="Seconds each step takes", default=0.1, ge=0, le=10),
    ) -> str:
        started = time.monotonic()
        report_every = max(1, steps // 5)
        # No `desc=`: Replicate clients read progress from log lines that start with "NN%|".
        for step in tqdm(range(steps), file=sys.stderr):
            time.sleep(step_s)
            if (step + 1) % report_every == 0 or step + 1 == steps:
                print(f"finished step {step + 1}/{steps}", flush=True)
        return f"ran {steps} steps in {time.monotonic() - started:.2f}s"
