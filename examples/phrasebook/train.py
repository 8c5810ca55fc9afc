"""Make a phrasebook from a word list: one `word<TAB>translation` (or `word,translation`) per line."""

import json
import os
import tempfile

from cog import BaseModel, Input, Path


class TrainingOutput(BaseModel):
    weights: Path


def train(
    words: Path = Input(description="A text file: one `word<TAB>translation` or `word,translation` per line"),
    name: str = Input(description="What to call this phrasebook", default="my phrasebook"),
    lowercase: bool = Input(description="Match words whatever their case", default=True),
) -> TrainingOutput:
    book = {}
    with open(words, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            sep = "\t" if "\t" in line else ","
            if sep not in line:
                raise ValueError(f"line {n}: expected `word{sep}translation`, got {line!r}")
            word, translation = (part.strip() for part in line.split(sep, 1))
            book[word.lower() if lowercase else word] = translation
    if not book:
        raise ValueError("the word list is empty")
    print(f"learned {len(book)} words")
    out = os.path.join(tempfile.mkdtemp(), "phrasebook.json")
    with open(out, "w", encoding="utf-8") as f:
        json.dump({"name": name, "words": book}, f, ensure_ascii=False)
    return TrainingOutput(weights=Path(out))
