"""The bundled model, checked against the real collections through the public API.

Runs wherever ../shared/data exists; in CI (CI=true) it must exist.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
from _split import DATA, files_by_split
from sklearn.metrics import accuracy_score, recall_score, roc_auc_score

PRETRAINED = Path(__file__).resolve().parents[1] / "pretrained"

if not (DATA / "br35h").is_dir():
    if os.environ.get("CI") == "true":
        raise RuntimeError(f"CI needs the data at {DATA}")
    pytest.skip(f"data not found at {DATA}", allow_module_level=True)


@pytest.fixture(scope="module")
def detector():
    from detector import BrainTumorDetector

    return BrainTumorDetector.from_pretrained(PRETRAINED)


@pytest.fixture(scope="module")
def split():
    return json.loads((PRETRAINED / "split.json").read_text())


@pytest.fixture(scope="module")
def files(detector, split) -> dict[str, list[tuple[Path, dict]]]:
    """Every image file of the collections the model was trained on, by split, with its entry."""
    return files_by_split(split, detector.config["training"]["data"])


def test_split_covers_the_data_and_holds_out_whole_groups(split, files):
    listed = sum(len(files[s]) for s in ("train", "val", "test"))
    assert listed == len(split) + files_sharing_a_hash(files)
    # Unlisted: only the slices the catalogue leaves out (sartaj's CT and doubtful
    # slices) and the two whose brain crop fails.
    assert len(files["unlisted"]) <= 25
    test_groups = {e["cluster"] for e in split.values() if e["split"] == "test"}
    other_groups = {e["cluster"] for e in split.values() if e["split"] != "test"}
    assert not test_groups & other_groups
    test_patients = {
        (e["collection"], e["patient"])
        for e in split.values()
        if e["split"] == "test" and e["patient"]
    }
    other_patients = {
        (e["collection"], e["patient"])
        for e in split.values()
        if e["split"] != "test" and e["patient"]
    }
    assert not test_patients & other_patients
    tested = {e["collection"] for e in split.values() if e["split"] == "test"}
    assert tested == {e["collection"] for e in split.values()}


def files_sharing_a_hash(files) -> int:
    """Byte-identical files (one entry in split.json for several files)."""
    hashes = [
        hashlib.sha256(p.read_bytes()).hexdigest()
        for s in ("train", "val", "test")
        for p, _ in files[s]
    ]
    return len(hashes) - len(set(hashes))


def test_no_test_slice_has_a_near_duplicate_in_train_or_val(files):
    """Correlation of 32x32 thumbnails (whole image and brain crop) < 0.95 across the
    split, except between two known patients of one collection: registered,
    skull-stripped heads of different people look alike without being copies."""
    from detector.data import DUPLICATE_CORRELATION, thumbnail
    from preprocessing import crop_brain, decode

    def thumbs(pairs):
        greys = [decode(p) for p, _ in pairs]
        return np.stack([thumbnail(g) for g in greys]), np.stack(
            [thumbnail(crop_brain(g)) for g in greys]
        )

    test, rest = files["test"], files["train"] + files["val"]
    (test_whole, test_crop), (rest_whole, rest_crop) = thumbs(test), thumbs(rest)
    similar = (
        np.maximum(test_whole @ rest_whole.T, test_crop @ rest_crop.T) >= DUPLICATE_CORRELATION
    )
    for i, j in zip(*np.nonzero(similar)):
        a, b = test[i][1], rest[j][1]
        assert a["collection"] == b["collection"] and "" != a["patient"] != b["patient"] != "", (
            f"{test[i][0]} has a near-duplicate in train/val: {rest[j][0]}"
        )


def test_test_metrics_match_config(detector, files):
    """Recompute the published test metrics from the raw files, within 0.5 points."""
    paths = [p for p, _ in files["test"]]
    y = np.array([e["label"] for _, e in files["test"]])
    p = np.array([r.tumor_probability for r in detector.predict_batch(paths)])
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
    assert published["n"] == len(paths)
    # ... and per collection.
    # The folder, not the entry: a file copied byte for byte into two collections has one entry.
    collections = np.array([p.relative_to(DATA).parts[0] for p, _ in files["test"]])
    for collection, row in detector.config["metrics"]["test_by_subgroup"].items():
        if collection not in set(collections):
            continue  # a subgroup across collections (sartaj axial normals, ...)
        mine = collections == collection
        assert row["n"] == mine.sum()
        for label, name in ((1, "sensitivity"), (0, "specificity")):
            if row[name] is not None:
                here = mine & (y == label)
                assert np.mean((p[here] >= threshold) == label) == pytest.approx(
                    row[name], abs=0.005
                )


def test_type_figures_and_pointing_game_match_config(detector, files):
    """Recompute the type network's test figures from the raw files, and whether
    Grad-CAM's peak falls in figshare's tumour boxes, within 0.5 points."""
    from detector.catalogue import TUMOR_TYPES, catalogue
    from detector.data import tumor_boxes
    from detector.evaluation import pointing_game
    from preprocessing import preprocess, to_input

    # Each file's type from its own folder: a file copied byte for byte into br35h has
    # the split.json entry of its sartaj twin, and no type of its own.
    types = {e.path: e.tumor_type for c in ("sartaj", "figshare") for e in catalogue(DATA / c)}
    typed = [(path, types[path]) for path, _ in files["test"] if types.get(path)]
    preprocessed = [preprocess(path, detector.preprocess_config) for path, _ in typed]
    x_type = np.stack([to_input(p.cropped, detector.type_config) for p in preprocessed])
    truth = np.array([TUMOR_TYPES.index(tumor_type) for _, tumor_type in typed])
    predicted = detector.type_probabilities(x_type).argmax(axis=1)
    published = detector.config["metrics"]["type_test"]
    assert published["n"] == len(typed)
    assert np.mean(predicted == truth) == pytest.approx(published["accuracy"]["value"], abs=0.005)
    for k, name in enumerate(TUMOR_TYPES):
        recall = np.mean(predicted[truth == k] == k)
        assert recall == pytest.approx(published["per_type"][name]["recall"]["value"], abs=0.005)

    # The folder, not the entry: a figshare file copied byte for byte into sartaj has one entry.
    boxed = [
        i for i, (path, _) in enumerate(typed) if path.relative_to(DATA).parts[0] == "figshare"
    ]
    names = [typed[i][0].relative_to(DATA).as_posix() for i in boxed]
    boxes = tumor_boxes(names, [DATA / "figshare"], detector.preprocess_config)
    x = np.stack([preprocessed[i].x for i in boxed])
    games = detector.config["metrics"]["pointing_game"]
    for network, inputs in (("classifier", x), ("type_classifier", x_type[boxed])):
        game = pointing_game(detector.heat_maps(inputs, network), boxes)
        assert game["n"] == games[network]["n"]
        assert game["hits"] == pytest.approx(games[network]["hits"], abs=0.005), network
        assert game["centre_baseline"] == pytest.approx(games[network]["centre_baseline"], abs=1e-9)


def test_a_real_slice_through_the_documented_one_liner(detector):
    result = detector.predict(str(DATA / "br35h" / "yes" / "y0.jpg"))
    assert 0.0 <= result.tumor_probability <= 1.0
    assert result.label in {"tumor", "normal", "inconclusive"}
    assert result.cropped.dtype == np.uint8 and result.reconstruction.dtype == np.uint8
