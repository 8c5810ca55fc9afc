"""A fake language model that streams tokens, like an LLM on Replicate does."""

import hashlib
import time

from cog import BaseRunner, ConcatenateIterator, Input

WORDS = [
    "the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "while", "small", "birds",
    "sing", "songs", "about", "rivers", "mountains", "clouds", "and", "stars", "that", "shine",
    "above", "quiet", "towns", "where", "people", "dream", "of", "distant", "seas", "bright",
    "lanterns", "old", "bridges", "green", "fields", "warm", "bread", "soft", "rain", "gentle",
    "wind", "silver", "moon", "golden", "sun",
]


class Runner(BaseRunner):
    def run(
        self,
        prompt: str = Input(description="Text that seeds the generated tokens"),
        max_tokens: int = Input(description="Number of tokens to generate", default=8, ge=1, le=100),
        delay: float = Input(description="Seconds to wait between tokens", default=0.05, ge=0, le=2),
    ) -> ConcatenateIterator[str]:
        # Deterministic: the same prompt always yields the same tokens.
        digest = hashlib.sha256(prompt.encode("utf-8")).digest()
        for i in range(max_tokens):
            if i:
                time.sleep(delay)
            word = WORDS[(digest[i % len(digest)] + 7 * i) % len(WORDS)]
            yield word if i == 0 else " " + word
