"""Out-of-distribution flags of the bundled model.

Photos, documents and a CT-like phantom must be flagged (or refused: no brain
crop found), and so must MRI slices cut the way the model never saw in training
(Br35H is axial only): sagittal and coronal slices of a real 3-D volume,
nilearn's bundled MNI152 template. Axial slices of the same volume must not be
flagged, nor more than 2 % of the validation MRIs.

Uses pretrained/ (or the model directory in $OOD_MODEL_DIR); skips without
one, except in CI (CI=true), where it must be there.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from _split import DATA, files_by_split
from conftest import BR35H, PRETRAINED, require

from preprocessing import InvalidImageError

MODEL_DIR = Path(os.environ.get("OOD_MODEL_DIR") or PRETRAINED)
# Middle +-10 % of each axis: a whole-brain cut, not the skull's edge.
POSITIONS = (0.4, 0.45, 0.5, 0.55, 0.6)
# Br35H slices that detector.ood's fixed rules flag: pages printed on white paper.
SCANNED_PRINTOUTS = {"yes/y908.jpg", "yes/y1449.jpg"}


@pytest.fixture(scope="module")
def detector():
    require((MODEL_DIR / "config.json").is_file(), f"no model at {MODEL_DIR}")
    from detector import BrainTumorDetector

    return BrainTumorDetector.from_pretrained(MODEL_DIR)


@pytest.fixture(scope="module", params=[1, 2], ids=["mni152-1mm", "mni152-2mm"])
def volume(request):
    """The template in canonical RAS+ orientation, and its voxels (shipped with nilearn: no network)."""
    try:
        import nibabel as nib
        from nilearn.datasets import load_mni152_template
    except ImportError:
        require(False, "nilearn is not installed")
    image = nib.as_closest_canonical(load_mni152_template(resolution=request.param))
    # Axes: x left -> right, y posterior -> anterior, z inferior -> superior.
    return image, np.asanyarray(image.dataobj)


def _index(fraction: float, length: int) -> int:
    return round(fraction * (length - 1))


def _flagged_or_refused(detector, image) -> bool:
    try:
        return detector.predict(image).out_of_distribution
    except InvalidImageError:
        return True


def _photo(name: str) -> np.ndarray:
    import skimage.data

    image = getattr(skimage.data, name)()
    if image.dtype != np.uint8:  # the phantom is float in [0, 1]
        image = np.round(255 * (image - image.min()) / np.ptp(image)).astype(np.uint8)
    return image


@pytest.mark.parametrize(
    "name",
    ["astronaut", "coffee", "chelsea", "page", "rocket", "retina", "text", "shepp_logan_phantom"],
)
def test_photos_documents_and_a_phantom_are_flagged_or_refused(detector, name):
    assert _flagged_or_refused(detector, _photo(name))


@pytest.mark.parametrize(
    "name, check",
    [
        ("chelsea", "chroma"),  # a cat's face fills the crop: laid out like a head
        ("retina", "chroma"),  # a round bright disc on black, the autoencoder rebuilds it
        ("page", "background_level"),  # dark print on light paper
        ("text", "background_level"),
    ],
)
def test_colour_and_paper_are_caught_by_the_fixed_rules(detector, name, check):
    """The rules that say what to fix catch these, whatever the learnt checks say (the
    layout check passes all four; the autoencoder passes the retina, see detector/ood.py)."""
    from detector import ood

    scores = detector.predict(_photo(name)).ood_scores()
    assert ood.failed_checks(scores, detector.config)[check], scores


@pytest.mark.parametrize("letterbox", [False, True])
def test_paper_reads_light_and_a_head_dark_squashed_or_letterboxed(letterbox):
    """A letterbox's black bars are not the crop's corners: a page stays paper."""
    from _images import brain

    from detector import ood
    from preprocessing import PreprocessConfig, preprocess

    cfg = PreprocessConfig(image_size=64, intensity="percentile", letterbox=letterbox)
    level = {
        name: ood.background_levels(preprocess(image, cfg).x[None])[0]
        for name, image in (("page", _photo("page")), ("text", _photo("text")),
                            ("wide head", brain(256, height=150)))
    }  # fmt: skip
    assert level["page"] > ood.BACKGROUND_LIMIT and level["text"] > ood.BACKGROUND_LIMIT, level
    assert level["wide head"] < ood.BACKGROUND_LIMIT, level


def test_the_gate_feature_distance_flags_a_picture_the_gate_calls_axial(detector):
    """scikit-image's colour wheel, which the gates never learnt from: their softmax says
    axial, but their features lie far from every MRI slice they learnt from. (Earlier
    gates said axial of its gravel and text; these call both not MRI.)"""
    from detector import ood

    prediction = detector.predict(_photo("colorwheel"))
    assert prediction.plane == "axial"
    assert ood.failed_checks(prediction.ood_scores(), detector.config)["gate_distance"]


@pytest.mark.parametrize("plane", ["sagittal", "coronal"])
def test_sagittal_and_coronal_slices_are_flagged(detector, volume, plane):
    _, voxels = volume
    if plane == "sagittal":  # the (y, z) plane: nose to the left, top of the head up
        slices = [np.rot90(voxels[_index(f, voxels.shape[0])])[:, ::-1] for f in POSITIONS]
    else:  # the (x, z) plane, radiological: the patient's right on the left, top up
        slices = [np.rot90(voxels[:, _index(f, voxels.shape[1])])[:, ::-1] for f in POSITIONS]
    flags = [
        r.out_of_distribution
        for r in detector.predict_batch(np.ascontiguousarray(s) for s in slices)
    ]
    assert all(flags), dict(zip(POSITIONS, flags))


def test_axial_slices_of_the_same_volume_are_not_flagged(detector, volume):
    """Through the NIfTI decoder, which shows axial slices the way Br35H does."""
    import nibabel as nib

    image, voxels = volume
    data = nib.Nifti1Image(voxels, image.affine).to_bytes()
    flags = {
        f: detector.predict(data, slice_index=_index(f, voxels.shape[2])).out_of_distribution
        for f in POSITIONS
    }
    assert not any(flags.values()), flags


@pytest.fixture(scope="module")
def validation(detector):
    """The model's val slices (its split.json, suspects left out): entries and predictions."""
    require(DATA.is_dir(), f"data not found at {DATA}")
    split = json.loads((MODEL_DIR / "split.json").read_text())
    val = [
        (path, entry)
        for path, entry in files_by_split(split, detector.config["training"]["data"])["val"]
        if not entry.get("excluded")
    ]
    return [e for _, e in val], detector.predict_batch([p for p, _ in val])


def test_few_axial_validation_mris_are_flagged(detector, validation):
    """Sagittal and coronal slices are flagged on purpose (the plane gate); axial MRIs rarely."""
    metrics = detector.config["metrics"]
    assert metrics["ood_rate_val_axial"] < 0.05
    entries, predictions = validation
    flags = np.array([r.out_of_distribution for r in predictions])
    axial = np.array([e["plane"] == "axial" for e in entries])
    assert flags.mean() == pytest.approx(metrics["ood_rate_val"], abs=1 / len(entries))
    assert flags[axial].mean() == pytest.approx(metrics["ood_rate_val_axial"], abs=1 / axial.sum())


def test_the_autoencoder_check_does_not_single_out_one_collection(detector, validation):
    """Its threshold flags 0.5 % of val; by its raw error it flagged Br35H's sharpest
    slices only (2.8 % of them, none of the other four collections'). Divided by
    each slice's detail, no collection gets more than three times its share."""
    entries, predictions = validation
    ratios = np.array([r.anomaly_ratio for r in predictions])
    flags = ratios > detector.config["anomaly_ratio_threshold"]
    collections = np.array([e["collection"] for e in entries])
    rates = {c: float(flags[collections == c].mean()) for c in sorted(set(collections))}
    assert 0 < flags.mean() <= 0.0055 and max(rates.values()) <= 0.015, rates


def test_an_autoencoder_as_good_as_a_slight_blur_scores_one_whatever_the_detail():
    """The raw error follows a slice's detail; the ratio the check reads does not."""
    import cv2

    from detector import ood

    rng = np.random.default_rng(0)
    noise = rng.random((2, 64, 64)).astype(np.float32)
    x = np.stack([cv2.GaussianBlur(n, (0, 0), s) for n, s in zip(noise, (2.0, 0.7))])[..., None]
    blurred = np.stack([cv2.GaussianBlur(i, (0, 0), ood.DETAIL_SIGMA) for i in x[..., 0]])
    blurred = blurred[..., None]
    error = np.mean((x - blurred) ** 2, axis=(1, 2, 3))
    assert error[1] > 20 * error[0]  # the sharp picture's raw error is far higher
    np.testing.assert_allclose(ood.anomaly_ratios(x, blurred), 1.0, rtol=1e-4)
    flat = np.full_like(x, 0.5)  # rebuilt as nothing at all: far worse than a blur
    assert np.all(ood.anomaly_ratios(x, flat) > 2)


def test_the_fixed_rules_pass_every_br35h_slice_but_scanned_printouts():
    """Their limits are not fitted, so check them against all of Br35H: only the
    two pages printed on white paper (both in train) have a light background."""
    require(BR35H.is_dir(), f"Br35H data not found at {BR35H}")
    from detector import ood
    from preprocessing import preprocess

    flagged = set()
    for path in sorted(BR35H.glob("*/*.jpg")):
        _, x, chroma, _ = preprocess(path)
        scores = {"chroma": chroma, "background_level": ood.background_levels(x[None])[0]}
        if scores["chroma"] > ood.CHROMA_LIMIT or scores["background_level"] > ood.BACKGROUND_LIMIT:
            flagged.add(path.relative_to(BR35H).as_posix())
    assert flagged == SCANNED_PRINTOUTS


def test_the_layout_check_travels_with_the_model(tmp_path):
    """Fitted arrays go to ood.npz and come back; the threshold in config.json judges."""
    from _models import tiny_detector

    from detector import BrainTumorDetector
    from detector.ood import failed_checks, fit_layout

    x = np.random.default_rng(0).random((12, 48, 48, 1), np.float32)
    detector = tiny_detector(48, ood=fit_layout(x[:8]), inconclusive_band=[0.5, 0.5])
    scores = detector.layout_scores(x)
    assert np.all(scores[8:] > scores[:8].max())  # unseen noise lies outside the fitted span
    detector.config["layout_threshold"] = float(scores[:8].max())
    detector.save_pretrained(tmp_path)

    loaded = BrainTumorDetector.from_pretrained(tmp_path)
    np.testing.assert_allclose(loaded.layout_scores(x), scores, rtol=1e-5)
    _, ood_scores = loaded.predict_arrays(x)
    flags = failed_checks(ood_scores, loaded.config)["layout_score"]
    assert not flags[:8].any() and flags[8:].all()


def test_the_app_names_the_check_that_fired():
    from detector import Prediction, views

    grey = np.zeros((8, 8), np.uint8)
    flagged = Prediction(0.9, "inconclusive", 0.01, True, grey, grey, grey, layout_score=40.0)
    text = views.verdict(flagged, {"anomaly_ratio_threshold": 1.2, "layout_threshold": 34.1})
    assert "Not a finding" in text and "layout score 40 > threshold 34.1" in text
