"""The app as a client sees it: `python app.py` in a subprocess, driven by gradio_client."""

from __future__ import annotations

import csv
import json
import logging
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from nibabel.testing import data_path as NIBABEL_DATA
from PIL import Image
from pydicom.data import get_testdata_file

pytestmark = pytest.mark.slow

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

NOT_AN_IMAGE = "This file is not an image we can read"


@pytest.fixture(scope="module")
def client(app_url) -> Client:
    return Client(app_url, verbose=False)


def predict(client: Client, path) -> tuple:
    return client.predict(handle_file(str(path)), api_name="/predict")


def check_answer(answer: tuple) -> dict:
    """Label, type label, four images, verdict, details: all present and consistent."""
    label, type_label, *images, verdict, details = answer
    assert 0.0 <= details["tumor_probability"] <= 1.0
    assert details["label"] in {"tumor", "normal", "inconclusive"}
    if details["out_of_distribution"]:
        assert label["confidences"] is None  # no bars: not a finding
    else:
        bars = {c["label"]: c["confidence"] for c in label["confidences"]}
        assert bars["tumour"] == pytest.approx(details["tumor_probability"], abs=1e-6)
    assert len(images) == 4
    for image in images:
        assert min(Image.open(image).size) >= 8
    # The type label comes as an update: shown for a tumour, hidden otherwise.
    assert type_label["visible"] == bool(details["tumor_type"])
    if details["tumor_type"]:  # a tumour, and a model with a type network
        assert details["label"] == "tumor" and f"**{details['tumor_type']}**" in verdict
        bars = {c["label"]: c["confidence"] for c in type_label["value"]["confidences"]}
        assert bars == pytest.approx(details["type_probabilities"], abs=1e-6)
    else:
        assert not type_label["value"] and details["type_probabilities"] == {}
    if details["plane"] in ("", "axial"):
        assert "P(tumour) = " in verdict
    else:  # named, not read: no probability at all
        assert "This looks like" in verdict and "P(tumour)" not in verdict
    return details


def test_slice_bad_file_slice(client, br35h_slice, tmp_path):
    check_answer(predict(client, br35h_slice))

    bad = tmp_path / "notes.txt"
    bad.write_text("not an image")
    with pytest.raises(AppError, match=NOT_AN_IMAGE):
        predict(client, bad)

    check_answer(predict(client, br35h_slice))  # still serving


def test_parallel_clients_all_answered(app_url, br35h_slice):
    def four_requests(_):
        client = Client(app_url, verbose=False)
        return [predict(client, br35h_slice) for _ in range(4)]

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = [a for batch in pool.map(four_requests, range(8)) for a in batch]
    assert len(answers) == 32
    probabilities = {round(check_answer(a)["tumor_probability"], 6) for a in answers}
    assert len(probabilities) == 1  # the same slice, the same answer, whatever the load


def test_a_colour_photo_is_flagged_and_the_app_says_why(client, tmp_path):
    import skimage.data

    photo = tmp_path / "cat.png"
    Image.fromarray(skimage.data.chelsea()).save(photo)
    answer = predict(client, photo)
    check_answer(answer)
    label, *_, verdict, details = answer
    assert details["out_of_distribution"] and label["confidences"] is None
    assert "Not a finding" in verdict and "colour picture" in verdict
    assert any("colour picture" in reason for reason in details["out_of_distribution_reasons"])


def test_dicom_and_nifti(client):
    for path in (get_testdata_file("MR_small.dcm"), Path(NIBABEL_DATA) / "anatomical.nii"):
        check_answer(predict(client, path))


def example_files() -> list[Path]:
    import app

    return sorted(p for p in EXAMPLES.iterdir() if p.name.lower().endswith(app.EXAMPLE_SUFFIXES))


def test_the_page_offers_the_bundled_examples(app_url):
    with urllib.request.urlopen(f"{app_url}config", timeout=30) as response:
        config = json.load(response)
    [examples] = [c for c in config["components"] if c["type"] == "dataset"]
    shown = {Path(sample[0]).name for sample in examples["props"]["samples"]}
    assert shown == {p.name for p in example_files()}
    assert {".jpg", ".dcm", ".gz"} <= {p.suffix for p in example_files()}


def test_every_example_gets_a_verdict(client, app_model_dir):
    from conftest import PRETRAINED

    for path in example_files():
        details = check_answer(predict(client, path))
        if app_model_dir != PRETRAINED:
            continue  # random weights: any verdict will do
        # The bundled model's verdict is what each example is there to show.
        if path.name.startswith("sagittal"):
            assert details["out_of_distribution"], path.name
        else:
            expected = "tumor" if path.name.startswith("tumour") else "normal"
            assert (details["label"], details["out_of_distribution"]) == (expected, False), (
                path.name
            )
            if expected == "tumor":  # tumour_<type>_...: the type the example is there to show
                assert details["tumor_type"] == path.name.split("_")[1], path.name


def test_batch_reports_bad_file_in_its_row(client, br35h_slice, tmp_path):
    bad = tmp_path / "empty.png"
    bad.write_bytes(b"")
    table, csv_path = client.predict(
        [handle_file(str(br35h_slice)), handle_file(str(bad))], api_name="/batch"
    )
    good_row, bad_row = table["data"]
    assert good_row[0] == br35h_slice.name and 0.0 <= good_row[2] <= 1.0
    assert good_row[1] in ("", "axial", "sagittal", "coronal", "not MRI")  # the plane column
    assert bad_row[:5] == ["empty.png", None, None, "error", None] and "empty" in bad_row[6]
    assert table["headers"][4] == "tumor_type"
    with open(csv_path, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == table["headers"] and len(rows) == 3


def test_unreachable_hub_falls_back_to_bundled(monkeypatch, tiny_model_dir, caplog):
    import huggingface_hub.constants

    import app

    # Offline mode fails at once, the way an unreachable Hub fails after its retries.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(app, "BUNDLED_MODEL", tiny_model_dir)
    with caplog.at_level(logging.WARNING, logger="app"):
        detector = app.load_detector("nobody/no-such-brain-model")
    assert detector.config["anomaly_ratio_threshold"] == 1e6  # the tiny model's
    [line] = [r.getMessage() for r in caplog.records if r.name == "app"]
    assert "nobody/no-such-brain-model" in line and str(tiny_model_dir) in line
