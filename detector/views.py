"""What the app shows: a detector's answers turned into images, text and table rows.

Presentation only: every number comes from BrainTumorDetector; this module
decides how it reads to a person (verdict wording, the About page, the batch
table), so app.py can stay layout and callbacks.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from preprocessing import InvalidImageError, decode, preprocess, square_to_crop
from preprocessing.decode import NIFTI_SUFFIXES
from preprocessing.medical import nifti_slice_count

from . import ood, plane
from .card import (
    HEADLINE_METRICS,
    fmt_metric,
    fmt_number,
    held_out_table,
    networks_measured,
    trained_on,
)
from .card import plots as plot_files
from .detector import BrainTumorDetector, Prediction
from .explain import overlay

DISCLAIMER = "Research demo, not a medical device: do not use it to diagnose or treat anyone."
BATCH_COLUMNS = [
    "file",
    "plane",
    "tumor_probability",
    "label",
    "tumor_type",
    "anomaly_score",
    "note",
]
TYPE_CAVEAT = (
    "The type is a research output: the network saw three types only, on T1 post-contrast "
    "slices; a radiologist or a biopsy tells the type."
)
OUT_OF_DISTRIBUTION = "unlike the training MRIs"


# The app shows each result image in a box this many pixels high (and about
# twice as wide); sending it at that size costs no sharpness and keeps the
# PNGs small and quick to encode.
DISPLAY_SIZE = 240


@dataclass
class SliceView:
    """One analysed slice, every image at the size the app shows it (see _fit)."""

    prediction: Prediction
    cropped: np.ndarray  # uint8 grey
    grad_cam: np.ndarray  # uint8 RGB: the heat map over the cropped brain
    reconstruction: np.ndarray  # uint8 grey
    error_map: np.ndarray  # uint8 grey


def analyse(detector: BrainTumorDetector, source, slice_index: int | None = None) -> SliceView:
    """Predict and explain one slice; raises InvalidImageError for bad input."""
    preprocessed = preprocess(source, detector.preprocess_config, slice_index=slice_index)
    prediction, heat = detector.predict_and_explain(preprocessed)
    cropped = _fit(prediction.cropped, DISPLAY_SIZE)
    letterbox = detector.preprocess_config.letterbox

    def on_crop(image):  # the networks' square, squashed or letterboxed, back onto the crop
        return square_to_crop(image, cropped.shape, letterbox)

    return SliceView(
        prediction=prediction,
        cropped=cropped,
        grad_cam=overlay(cropped, on_crop(heat)),
        reconstruction=on_crop(prediction.reconstruction),
        error_map=on_crop(prediction.error_map),
    )


def _fit(image: np.ndarray, size: int) -> np.ndarray:
    """Scaled, keeping its aspect, into a box ``size`` high and twice as wide."""
    height, width = image.shape[:2]
    scale = min(size / height, 2 * size / width)
    shape = (max(1, round(width * scale)), max(1, round(height * scale)))
    shrinking = scale < 1
    return cv2.resize(image, shape, interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


# ------------------------------------------------------------------ uploads
def is_volume(path) -> bool:
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def slice_count(path) -> int:
    """Axial slices in a NIfTI file (1 for anything else)."""
    if not is_volume(path):
        return 1
    return nifti_slice_count(Path(path).read_bytes(), Path(path).name)


def preview(path, slice_index: int | None = None) -> np.ndarray:
    """The uploaded slice as the decoder sees it (grey uint8), before the crop."""
    return decode(path, slice_index=slice_index)


# ------------------------------------------------------------------ verdict
def confidences(prediction: Prediction) -> dict[str, float] | str:
    """gr.Label value: P(tumour) and P(normal), or a warning instead when out of distribution.

    Bars for an input unlike the training MRIs would read as a finding; they are not one.
    """
    if prediction.out_of_distribution:
        return OUT_OF_DISTRIBUTION
    p = prediction.tumor_probability
    return {"tumour": p, "normal": 1.0 - p}


def type_confidences(prediction: Prediction) -> dict[str, float] | None:
    """gr.Label value of P(each tumour type); None when the label is not "tumor"."""
    return dict(prediction.type_probabilities) or None


def verdict(prediction: Prediction, config: dict) -> str:
    """One Markdown line that says what the numbers mean, and what they do not."""
    p = f"P(tumour) = {prediction.tumor_probability:.2f}"
    if prediction.plane not in ("", "axial"):
        # The other checks' reasons, if any, say more (a colour photo, paper); the
        # gate's feature distance would only say again that it is no MRI slice.
        scores = {**prediction.ood_scores(), "not_axial": 0.0, "gate_distance": 0.0}
        others = ood.reasons(scores, config)
        also = f" Besides, {others[0]}." if others else ""
        return f"⚠️ **Not a finding**: {not_axial(prediction)}{also}"
    if prediction.out_of_distribution:
        return (
            f"⚠️ **Not a finding: this image is {OUT_OF_DISTRIBUTION}**: "
            f"{why_unlike_training(prediction, config)}. "
            f"It may not be an axial brain MRI slice; its {p} means nothing here."
        )
    if prediction.label == "inconclusive":
        low, high = config["inconclusive_band"]
        return (
            f"**Inconclusive**: {p} lies inside the uncertainty band [{low:.2f}, {high:.2f}], "
            "where the model's answers are unreliable."
        )
    if prediction.label == "tumor" and prediction.tumor_type:
        type_p = prediction.type_probabilities[prediction.tumor_type]
        return (
            f"**Tumour suspected**: {p}. Most likely type: **{prediction.tumor_type}** "
            f"(P {type_p:.2f}). {TYPE_CAVEAT}"
        )
    if prediction.label == "tumor":
        return f"**Tumour suspected**: {p}."
    return f"**No tumour seen**: {p}."


def not_axial(prediction: Prediction) -> str:
    """What the slice is instead of axial brain MRI, and what to upload."""
    name, how = prediction.plane, "(says its header)"
    if prediction.plane_source == "gate":
        p = prediction.plane_probabilities
        name = plane.named(name, p)
        both = name == plane.SAGITTAL_OR_CORONAL
        how = f"(P {p['sagittal'] + p['coronal'] if both else p[name]:.2f})"
    what = "no brain MRI" if name == "not MRI" else f"a {name} slice"
    return (
        f"This looks like {what} {how}. The detector reads axial brain MRI slices: "
        "upload an axial slice, or the NIfTI/DICOM volume."
    )


def why_unlike_training(prediction: Prediction, config: dict) -> str:
    """The first check that flagged the input, in words; the details list them all."""
    reasons = ood.reasons(prediction.ood_scores(), config)
    if len(reasons) > 1:
        return f"{reasons[0]}; {len(reasons) - 1} more check(s) fired too"
    return reasons[0] if reasons else ""


def details(prediction: Prediction, config: dict) -> dict:
    """The JSON panel and API payload: the prediction plus the thresholds that judged it."""
    return {
        **prediction.as_dict(),
        "out_of_distribution_reasons": ood.reasons(prediction.ood_scores(), config),
        "decision_threshold": config["decision_threshold"],
        "inconclusive_band": list(config["inconclusive_band"]),
        "anomaly_ratio_threshold": config.get("anomaly_ratio_threshold"),
        "layout_threshold": config.get("layout_threshold"),
        "plane_threshold": config.get("plane_threshold"),
        "gate_distance_threshold": config.get("gate_distance_threshold"),
        "chroma_limit": ood.CHROMA_LIMIT,
        "background_limit": ood.BACKGROUND_LIMIT,
    }


# -------------------------------------------------------------------- batch
def batch_row(detector: BrainTumorDetector, path) -> list:
    """One table row; a bad file reports its error here instead of stopping the batch."""
    name = Path(path).name
    try:
        prediction = detector.predict(path)
    except InvalidImageError as exc:
        return [name, None, None, "error", None, None, str(exc)]
    note = ""
    if prediction.plane not in ("", "axial"):
        note = not_axial(prediction)
    elif prediction.out_of_distribution:
        note = f"{OUT_OF_DISTRIBUTION}: {why_unlike_training(prediction, detector.config)}"
    return [
        name,
        prediction.plane,
        round(prediction.tumor_probability, 4),
        prediction.label,
        prediction.tumor_type,
        round(prediction.anomaly_score, 5),
        note,
    ]


def write_csv(rows: list[list], path) -> Path:
    path = Path(path)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(BATCH_COLUMNS)
        writer.writerows(["" if cell is None else cell for cell in row] for row in rows)
    return path


# -------------------------------------------------------------------- about
def about_markdown(config: dict) -> str:
    """Metrics, thresholds and limits, from the model's config.json."""
    metrics = config.get("metrics") or {}
    test = metrics.get("test") or {}
    rows = "\n".join(
        f"| {name} | {fmt_metric(test.get(key))} |" for key, name in HEADLINE_METRICS.items()
    )
    band = config["inconclusive_band"]
    n_test = f"{test['n']} slices; " if test.get("n") else ""
    if (config.get("split") or {}).get("method", "cluster") == "cluster":
        split = (
            "split by near-duplicate clusters, so that no copy of a test scan was seen in training"
        )
    else:
        split = "a random split: copies of test scans may be in training, so these are optimistic"
    collections = trained_on(config, "the training data")
    held_out = ""
    if config.get("held_out"):
        held_out = f"""
## On collections it never saw

The same recipe trained without one collection, scored on that collection whole
(figshare holds only tumours, ms and oasis only normals). This is how it may fare
on your scans:

{held_out_table(config["held_out"])}
"""
    return f"""\
# ⚠️ {DISCLAIMER}

This app shows what a small convolutional network makes of one brain-MRI slice.
It has not been validated on patients, scanners or hospitals, and it can be wrong
with high confidence. A clinician reading the scan is the only diagnosis.

## How well it did on held-out slices

Test slices of {collections}, {split} ({n_test}95 % bootstrap intervals).

| metric | value [95 % CI] |
| --- | --- |
{rows}
{held_out}{type_markdown(config)}
The autoencoder's reconstruction error alone separates tumour from normal with
AUROC {fmt_number(metrics.get("autoencoder_test_auroc"))}; the app uses it to
flag inputs unlike the training MRIs, not to diagnose.

## How to read the output

- **P(tumour)** is the classifier's probability; the decision threshold is
  {fmt_number(config.get("decision_threshold"))}.
- Between {fmt_number(band[0])} and {fmt_number(band[1])} the answer is
  **inconclusive**: the model is unreliable there.
- **Unlike the training MRIs** (another modality, another body part, a
  sagittal or coronal slice, a photo, a document): the probability is then not
  a finding. Six checks, any one of which flags an input: the plane gate's
  verdict (1 - P(axial) above {fmt_number(config.get("plane_threshold"))}), its
  features' distance from every MRI slice it learnt (above
  {fmt_number(config.get("gate_distance_threshold"), ".4g")}), the autoencoder's
  reconstruction error over the slice's own fine detail (above
  {fmt_number(config.get("anomaly_ratio_threshold"), ".3g")}), the
  layout of the edges (above {fmt_number(config.get("layout_threshold"), ".3g")}), colour
  (chroma above {ood.CHROMA_LIMIT:g}) and a light background (level above {ood.BACKGROUND_LIMIT:g}).
- **Grad-CAM** shows where the classifier looked, coarsely; it does not outline a
  tumour{pointing_sentence(config)}.

## Limits

- Trained on {collections}: public 2-D JPEG slices of few or unknown scanners
  and sequences, re-encoded and resized. Other sources fare worse (see above).
- Some labels are wrong (masses in a "normal" folder, a CT in a "tumour" one);
  the test metrics are computed against the labels as published.
- One slice at a time: no 3-D context, no tumour size or outline.
- The tumour type is one of three (glioma, meningioma, pituitary), learnt from
  T1 post-contrast slices of two collections: a research output, not a diagnosis.
- DICOM and NIfTI are read, but the model never saw them in training.
"""


def pointing_sentence(config: dict) -> str:
    """How often the Grad-CAM peak fell in figshare's tumour boxes ("" when not measured)."""
    game = ((config.get("metrics") or {}).get("pointing_game") or {}).get("classifier")
    if not game:
        return ""
    return (
        f": on {game['n']} test tumours its peak fell inside the tumour's box for "
        f"{game['hits']:.0%} of them (the centre of the slice: {game['centre_baseline']:.0%})"
    )


def type_markdown(config: dict) -> str:
    """The About tab's tumour-type section ("" for a model without a type network)."""
    figures = (config.get("metrics") or {}).get("type_test")
    if not config.get("tumor_types") or not figures:
        return ""
    recalls = ", ".join(
        f"{name} {fmt_metric(row['recall'])}" for name, row in figures["per_type"].items()
    )
    return f"""
## Tumour type

When the label is tumour, a second network says which of {", ".join(config["tumor_types"])}
it looks like. On the {figures["n"]} test tumours of a known type: accuracy
{fmt_metric(figures["accuracy"])}, macro-F1 {fmt_metric(figures["macro_f1"])}; recall {recalls}.
{elsewhere_sentence(config)}The type confusion matrix is among the plots below. {TYPE_CAVEAT}
"""


def elsewhere_sentence(config: dict) -> str:
    """The type network by patient and on another collection (benchmarks/tumor_type.py), if measured."""
    results = config.get("type_results") or {}
    if not results.get("cv_summary"):
        return ""
    accuracy = results["cv_summary"]["accuracy"]
    text = (
        f"By patient, on figshare's own five folds ({networks_measured(results)}): "
        f"accuracy {accuracy['mean']:.3f} "
        f"± {accuracy['sd'] or 0:.3f}. "
    )
    cross = results.get("cross_collection") or {}
    if cross:
        pairs = ", ".join(f"{name} {m['accuracy']['value']:.3f}" for name, m in cross.items())
        text += f"Trained on one collection, typing the other's tumours (test <- train): {pairs}. "
    return text


def plots(assets: dict) -> list[tuple[np.ndarray, str]]:
    """The model directory's plots as (RGB image, caption), in the model card's order."""
    gallery = []
    for plot in plot_files(assets):
        image = cv2.imdecode(np.frombuffer(assets[plot["file"]], np.uint8), cv2.IMREAD_COLOR)
        if image is not None:  # a broken plot is left out, not fatal
            gallery.append((cv2.cvtColor(image, cv2.COLOR_BGR2RGB), plot["caption"]))
    return gallery
