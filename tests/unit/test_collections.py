"""The collections config: the shipped file loads, and a typo fails with the file and field named."""

from __future__ import annotations

import pytest

from vendo_core.collections import DEFAULT_PATH, load_collections


def _write(tmp_path, text: str):
    p = tmp_path / "collections.yaml"
    p.write_text(text)
    return p


def test_shipped_collections_list_the_examples():
    cfg = load_collections()
    c = cfg.get("getting-started")
    assert c is not None and c.description
    assert c.models == ("vendo/hello-world", "vendo/stream", "vendo/image", "vendo/slow")


def test_minimal_collection(tmp_path):
    cfg = load_collections(_write(tmp_path, "collections:\n  - {slug: a, name: A, description: ''}\n"))
    assert cfg.get("a").models == () and cfg.get("a").full_description is None
    assert cfg.get("b") is None


def test_empty_file_has_no_collections(tmp_path):
    assert load_collections(_write(tmp_path, "")).collections == ()


@pytest.mark.parametrize("text, field", [
    ("collections:\n  - {slug: a, name: A, description: d, modles: []}\n", "modles"),
    ("collections:\n  - {slug: a, name: A}\n", "description"),
    ("collections:\n  - {slug: a, name: A, description: null}\n", "description"),
    ("collections:\n  - {slug: 'Not A Slug', name: A, description: d}\n", "slug"),
    ("collections:\n  - {slug: a, name: A, description: d, models: [hello-world]}\n", "models"),
    ("colections: []\n", "colections"),
])
def test_typos_fail_loudly_naming_file_and_field(tmp_path, text, field):
    path = _write(tmp_path, text)
    with pytest.raises(ValueError) as e:
        load_collections(path)
    assert str(path) in str(e.value) and field in str(e.value)


def test_duplicate_slugs_are_refused(tmp_path):
    text = "collections:\n  - {slug: a, name: A, description: d}\n  - {slug: a, name: B, description: d}\n"
    with pytest.raises(ValueError, match="appears twice"):
        load_collections(_write(tmp_path, text))


def test_default_path_is_the_configs_file():
    assert DEFAULT_PATH.name == "collections.yaml" and DEFAULT_PATH.parent.name == "configs"
