"""The bundled model, checked against the real Br35H data through the public API.

Runs wherever ../shared/data/br35h exists; in CI (CI=true) it must exist.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, recall_score, roc_auc_score

ROOT = Path(__file__).resolve().parents[1]
PRETRAINED = ROOT / "pretrained"
DATA = ROOT.parent / "shared" / "data" / "br35h"

if not DATA.is_dir():
    if os.environ.get("CI") == "true":
        raise RuntimeError(f"CI needs the Br35H data at {DATA}")
    pytest.skip(f"Br35H data not found at {DATA}", allow_module_level=True)


@pytest.fixture(scope="module")
def detector():
    from detector import BrainTumorDetector

    return BrainTumorDetector.from_pretrained(PRETRAINED)


@pytest.fixture(scope="module")
def split():
    return json.loads((PRETRAINED / "split.json").read_text())


def _files_by_split(split: dict) -> dict[str, list[Path]]:
    by_split = {"train": [], "val": [], "test": []}
    for path in sorted(DATA.glob("*/*")):
        entry = split.get(hashlib.sha256(path.read_bytes()).hexdigest())
        if entry:
            by_split[entry["split"]].append(path)
    return by_split


def test_split_covers_the_data_and_holds_out_whole_clusters(split):
    files = _files_by_split(split)
    assert sum(len(v) for v in files.values()) == len(list(DATA.glob("*/*")))
    test_clusters = {e["cluster"] for e in split.values() if e["split"] == "test"}
    other_clusters = {e["cluster"] for e in split.values() if e["split"] != "test"}
    assert not test_clusters & other_clusters


def test_no_test_slice_has_a_near_duplicate_in_train_or_val(split):
    from detector.data import DUPLICATE_CORRELATION, thumbnail
    from preprocessing import crop_brain, decode

    files = _files_by_split(split)

    def thumbs(paths):
        greys = [decode(p) for p in paths]
        return np.stack([thumbnail(g) for g in greys]), np.stack([thumbnail(crop_brain(g)) for g in greys])

    test_whole, test_crop = thumbs(files["test"])
    rest_whole, rest_crop = thumbs(files["train"] + files["val"])
    assert (test_whole @ rest_whole.T).max() < DUPLICATE_CORRELATION
    assert (test_crop @ rest_crop.T).max() < DUPLICATE_CORRELATION


def test_test_metrics_match_config(detector, split):
    """Recompute the published test metrics from the raw files, within 0.5 points."""
    files = _files_by_split(split)["test"]
    y = np.array([split[hashlib.sha256(p.read_bytes()).hexdigest()]["label"] for p in files])
    p = np.array([r.tumor_probability for r in detector.predict_batch(files)])
    published = detector.config["metrics"]["test"]
    threshold = detector.config["decision_threshold"]
    recomputed = {
        "accuracy": accuracy_score(y, p >= threshold),
        "auroc": roc_auc_score(y, p),
        "sensitivity": recall_score(y, p >= threshold, pos_label=1),
        "specificity": recall_score(y, p >= threshold, pos_label=0),
    }
    for name, value in recomputed.items():
        assert value == pytest.approx(published[name]["value"], abs=0.005), name
    assert published["n"] == len(files)


def test_a_real_slice_through_the_documented_one_liner(detector):
    result = detector.predict(str(DATA / "yes" / "y0.jpg"))
    assert 0.0 <= result.tumor_probability <= 1.0
    assert result.label in {"tumor", "normal", "inconclusive"}
    assert result.cropped.dtype == np.uint8 and result.reconstruction.dtype == np.uint8
