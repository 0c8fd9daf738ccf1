"""The real files of a model's split.json, for tests that recompute its figures.

Import with ``from _split import DATA, files_by_split``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def files_by_split(split: dict, collections: list[str]) -> dict[str, list[tuple[Path, dict]]]:
    """Every image file of ``collections`` under DATA, by its split, with its split.json entry.

    Files that split.json does not list (left out by the catalogue, or whose
    crop failed) are under "unlisted".
    """
    by_split = {"train": [], "val": [], "test": [], "unlisted": []}
    for collection in collections:
        for path in sorted((DATA / collection).rglob("*.jpg")):
            entry = split.get(hashlib.sha256(path.read_bytes()).hexdigest())
            by_split[entry["split"] if entry else "unlisted"].append((path, entry))
    return by_split
