"""Translate word by word with a phrasebook. The base version knows a handful of English → French
words; a training on your own word list makes a version that speaks your phrasebook."""

import json
import os
import urllib.request
from typing import Optional

from cog import BasePredictor, Input

BUILT_IN = {"hello": "bonjour", "world": "monde", "cat": "chat", "dog": "chien", "thank": "merci",
            "you": "vous", "good": "bon", "morning": "matin"}


def read_weights(weights: str) -> dict:
    """The phrasebook a training made: a URL (as a platform hands it in COG_WEIGHTS) or a path (as
    `cog predict` with a local file gives it)."""
    if weights.startswith(("http://", "https://")):
        with urllib.request.urlopen(weights, timeout=60) as r:  # noqa: S310 - the platform's own link
            return json.loads(r.read())
    with open(os.fspath(weights), encoding="utf-8") as f:
        return json.load(f)


class Predictor(BasePredictor):
    def setup(self, weights: Optional[str] = None) -> None:
        if weights:
            book = read_weights(str(weights))
            self.words, self.name = book["words"], book.get("name") or "trained"
        else:
            self.words, self.name = BUILT_IN, "built-in"
        print(f"phrasebook {self.name!r}: {len(self.words)} words")

    def predict(
        self,
        text: str = Input(description="Words to translate", default="hello world"),
    ) -> str:
        out = []
        for word in text.split():
            key = word.lower().strip(".,!?")
            out.append(self.words.get(key, word))
        return " ".join(out)
