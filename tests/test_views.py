"""detector.views: how a prediction reads in the app (no server, no network)."""

from __future__ import annotations

import csv
from dataclasses import replace

import numpy as np
import pytest

from detector import InvalidImageError, Prediction, views

CONFIG = {
    "decision_threshold": 0.5,
    "inconclusive_band": [0.4, 0.6],
    "anomaly_ratio_threshold": 1.2,
    "metrics": {"test": {"n": 500, "accuracy": {"value": 0.9, "ci95": [0.87, 0.93]}}},
}


def prediction(p: float, label: str, ood: bool = False) -> Prediction:
    grey = np.zeros((8, 8), np.uint8)
    ratio = 1.5 if ood else 0.9
    return Prediction(p, label, 0.01, ood, grey, grey, grey, anomaly_ratio=ratio)


def test_in_distribution_shows_both_probabilities():
    assert views.confidences(prediction(0.9, "tumor")) == {
        "tumour": 0.9,
        "normal": pytest.approx(0.1),
    }
    assert views.verdict(prediction(0.9, "tumor"), CONFIG).startswith("**Tumour suspected**")
    assert views.verdict(prediction(0.1, "normal"), CONFIG).startswith("**No tumour seen**")


def test_inside_the_band_is_inconclusive():
    text = views.verdict(prediction(0.55, "inconclusive"), CONFIG)
    assert "Inconclusive" in text and "[0.40, 0.60]" in text


def test_out_of_distribution_is_not_presented_as_a_finding():
    ood = prediction(0.97, "inconclusive", ood=True)
    assert views.confidences(ood) == views.OUT_OF_DISTRIBUTION  # no bars
    text = views.verdict(ood, CONFIG)
    assert "Not a finding" in text and "anomaly ratio 1.5 > threshold 1.2" in text


def test_the_verdict_says_in_words_why_an_image_was_flagged():
    grey = np.zeros((8, 8), np.uint8)
    photo = Prediction(0.6, "inconclusive", 0.01, True, grey, grey, grey, chroma=61.0)
    document = Prediction(0.2, "inconclusive", 0.01, True, grey, grey, grey, background_level=0.8)
    assert "colour picture" in views.verdict(photo, CONFIG)
    assert (
        "chroma 61 > threshold 25" in views.details(photo, CONFIG)["out_of_distribution_reasons"][0]
    )
    assert "background is light" in views.verdict(document, CONFIG)

    both = Prediction(
        0.2, "inconclusive", 0.05, True, grey, grey, grey, chroma=61.0, anomaly_ratio=1.5
    )
    assert len(views.details(both, CONFIG)["out_of_distribution_reasons"]) == 2
    text = views.verdict(both, CONFIG)  # the first check in words, the others counted
    assert "colour picture" in text and "1 more check(s) fired too" in text
    assert "autoencoder" not in text


class FakeDetector:
    config = CONFIG

    def predict(self, path):
        if str(path).endswith(".txt"):
            raise InvalidImageError("This file is not an image we can read.")
        if str(path).endswith(".png"):
            return prediction(0.8, "inconclusive", ood=True)
        return typed_tumour()


def test_batch_row_keeps_a_bad_file_in_its_row(tmp_path):
    names = ("/x/a.jpg", "/x/b.txt", "/x/c.png")
    rows = [views.batch_row(FakeDetector(), name) for name in names]
    assert rows[0] == ["a.jpg", "", 0.8, "tumor", "meningioma", 0.01, ""]
    assert rows[1] == [
        "b.txt",
        None,
        None,
        "error",
        None,
        None,
        "This file is not an image we can read.",
    ]
    assert rows[2][6].startswith(f"{views.OUT_OF_DISTRIBUTION}: the autoencoder cannot rebuild it")
    with views.write_csv(rows, tmp_path / "p.csv").open(newline="") as f:
        written = list(csv.reader(f))
    assert written[0] == views.BATCH_COLUMNS and written[0][4] == "tumor_type"
    assert written[1][4] == "meningioma"
    assert written[2] == ["b.txt", "", "", "error", "", "", rows[1][6]]


def test_a_tumour_gets_its_type_with_the_caveat_and_a_normal_none():
    typed = typed_tumour()
    assert views.type_confidences(typed) == typed.type_probabilities
    text = views.verdict(typed, CONFIG)
    assert text.startswith("**Tumour suspected**") and "**meningioma** (P 0.70)" in text
    assert views.TYPE_CAVEAT in text
    assert views.details(typed, CONFIG)["tumor_type"] == "meningioma"
    assert views.type_confidences(prediction(0.1, "normal")) is None
    assert views.details(prediction(0.1, "normal"), CONFIG)["tumor_type"] is None


def test_the_about_page_shows_the_type_figures_only_when_the_model_has_them():
    assert "Tumour type" not in views.about_markdown(CONFIG)
    recall = {"value": 0.8, "ci95": [0.7, 0.9]}
    typed = {
        **CONFIG,
        "tumor_types": ["glioma", "meningioma", "pituitary"],
        "metrics": {**CONFIG["metrics"], "type_test": {
            "n": 321, "accuracy": {"value": 0.85, "ci95": [0.8, 0.9]}, "macro_f1": recall,
            "per_type": {t: {"n": 107, "precision": recall, "recall": recall} for t in ("glioma", "meningioma", "pituitary")},
        }},
    }  # fmt: skip
    text = views.about_markdown(typed)
    assert (
        "## Tumour type" in text and "321 test tumours" in text and "0.850 [0.800, 0.900]" in text
    )


def typed_tumour() -> Prediction:
    grey = np.zeros((8, 8), np.uint8)
    types = {"glioma": 0.2, "meningioma": 0.7, "pituitary": 0.1}
    return Prediction(
        0.8,
        "tumor",
        0.01,
        False,
        grey,
        grey,
        grey,
        tumor_type="meningioma",
        type_probabilities=types,
    )


def test_a_slice_in_another_plane_is_named_not_read():
    grey = np.zeros((8, 8), np.uint8)
    sagittal = Prediction(
        0.99, "inconclusive", 0.01, True, grey, grey, grey, not_axial=0.97, plane="sagittal",
        plane_probabilities={"axial": 0.03, "sagittal": 0.97, "coronal": 0.0, "not MRI": 0.0},
        plane_source="gate",
    )  # fmt: skip
    assert views.confidences(sagittal) == views.OUT_OF_DISTRIBUTION  # no probability bars
    text = views.verdict(sagittal, CONFIG)
    assert "This looks like a sagittal slice (P 0.97)" in text and "axial" in text
    assert "P(tumour)" not in text and "0.99" not in text
    unsure = replace(sagittal, plane_probabilities={"axial": 0.03, "sagittal": 0.57,
                                                    "coronal": 0.4, "not MRI": 0.0})  # fmt: skip
    assert "a sagittal or coronal slice (P 0.97)" in views.verdict(unsure, CONFIG)
    ct = Prediction(0.9, "inconclusive", 0.01, True, grey, grey, grey, not_axial=1.0,
                    plane="not MRI", plane_source="header")  # fmt: skip
    assert "no brain MRI (says its header)" in views.verdict(ct, CONFIG)
    # The gate's feature distance fires too, but only says again that it is no MRI.
    photo = Prediction(0.5, "inconclusive", 0.01, True, grey, grey, grey, chroma=61.0,
                       not_axial=0.9, gate_distance=400.0, plane="not MRI", plane_source="gate",
                       plane_probabilities={"not MRI": 0.9})  # fmt: skip
    text = views.verdict(photo, {**CONFIG, "gate_distance_threshold": 170.0})
    assert "Besides, it is a colour picture" in text and "plane gate learnt" not in text


def test_about_has_disclaimer_metrics_and_thresholds():
    text = views.about_markdown(CONFIG)
    assert views.DISCLAIMER in text
    assert "0.900 [0.870, 0.930]" in text and "500 slices" in text
    assert "not evaluated" in text  # AUROC, sensitivity... are absent


def test_analyse_decodes_once_and_sends_images_at_display_size(monkeypatch):
    from _images import brain
    from _models import tiny_detector

    import preprocessing

    detector = tiny_detector(40)
    image = brain()
    expected = detector.predict(image)
    heat = detector.explain(image)  # compiles Grad-CAM, so the count below is decoding only

    decoded = []
    real_decode = preprocessing.decode_with_colour
    monkeypatch.setattr(
        preprocessing,
        "decode_with_colour",
        lambda *a, **k: decoded.append(1) or real_decode(*a, **k),
    )
    view = views.analyse(detector, image)
    assert len(decoded) == 1
    assert view.prediction.tumor_probability == expected.tumor_probability
    _, same_heat = detector.predict_and_explain(
        preprocessing.preprocess(image, detector.preprocess_config)
    )
    np.testing.assert_array_equal(same_heat, heat)

    height, width = view.cropped.shape
    assert height == views.DISPLAY_SIZE or width == 2 * views.DISPLAY_SIZE
    assert view.grad_cam.shape == (height, width, 3)
    assert view.reconstruction.shape == view.error_map.shape == (height, width)
