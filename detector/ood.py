"""Out-of-distribution checks: is this an axial brain MRI slice like the training ones?

Six checks; any one flags an input (``failed_checks``):

- the plane gate (detector.plane) or the DICOM/NIfTI header: not an axial
  brain MRI slice;
- the gate's features: far from every MRI slice the gate learnt from
  (``fit_feature_distance``). The gate's softmax must pick one of its four
  classes, and its "not MRI" class knows only the pictures, pages and CT it
  saw; a new kind of picture (gravel, a cell, a grey retina) it may call axial
  with high probability, yet its features lie far from every real slice's;
- the autoencoder's reconstruction error relative to the input's own fine
  detail (``anomaly_ratios``);
- the layout check below: the directions of the edges, where;
- two fixed rules that every MRI slice obeys, which catch what those two
  miss (a cat's face, a retina photo, a printed page, handwriting):
  it is grey (``chroma``, from preprocessing.decode_with_colour), and the
  head lies on a dark background (``background_levels``).

Why a layout check: the autoencoder rebuilds a sagittal MRI slice, a retina
or a smooth photo (a rocket) as well as an axial slice, so it flags none of
them, while the classifier's own features place the skull-less template
axial slices as far from Br35H as sagittal ones. What sets a sagittal or
coronal slice (or a photo) apart from Br35H's axial slices is which way its
edges run, where. So: a histogram of oriented gradients (HOG: 8-pixel cells,
9 directions, each cell L2-Hys normalised so that contrast and MRI weighting do
not matter) of the network input, and its distance from the subspace that the
training slices' HOG spans (the residual of a PCA, the "Q statistic").

Pure numpy on the preprocessed input: it depends on the training data only,
not on the networks, so retraining on the same split gives the same check.
The fitted subspace lives in the model directory as ``ood.npz``; the threshold
(a high quantile of the validation slices' scores) in config.json.
"""

from __future__ import annotations

import cv2
import numpy as np

# The fixed rules' limits. Not fitted: they state what an MRI slice looks like,
# and sit far from every training slice. On Br35H: highest chroma 12 (a sepia
# scan; colour photos score 40 to 115); highest background level 0.30, except
# two scans of pages printed on white paper at 1.0 (documents score 0.75-0.8).
CHROMA_LIMIT = 25.0
BACKGROUND_LIMIT = 0.5

# Each check: (score name, its threshold: a config.json key or a fixed limit,
# what a flag means, in words for the person who uploaded the image). The app
# names the first that fires, so the fixed rules, which say what to fix, come early.
CHECKS = (
    ("not_axial", "plane_threshold",
     "it is not an axial brain MRI slice, and the model reads axial slices only"),
    ("chroma", CHROMA_LIMIT, "it is a colour picture, and MRI slices are grey"),
    ("background_level", BACKGROUND_LIMIT,
     ("its background is light, as on paper, where an MRI shows the head on a dark "
      "background: crop away any white margin")),
    ("gate_distance", "gate_distance_threshold",
     "it looks like no brain MRI slice the plane gate learnt from, in any plane"),
    ("layout_score", "layout_threshold",
     "its edges do not run like an axial slice's: the model reads axial brain MRI slices only"),
    ("anomaly_ratio", "anomaly_ratio_threshold",
     "the autoencoder cannot rebuild it the way it rebuilds training slices"),
)  # fmt: skip

# The plane gate (detector.plane) flags a slice when its not-axial score,
# 1 - P(axial), is over this; fit_plane_gate may raise it on val.
DEFAULT_PLANE_THRESHOLD = 0.5
# Thresholds that apply even when config.json lacks them: a model saved before the
# plane gate still refuses a slice whose DICOM header says it is not axial.
FALLBACK_THRESHOLDS = {"plane_threshold": DEFAULT_PLANE_THRESHOLD}

# The gate's feature distance: Gaussians of the real slices of these planes.
MRI_PLANES = ("axial", "sagittal", "coronal")
FEATURE_RIDGE = 1e-3

# The autoencoder check: its error divided by the input's fine detail, the
# squared difference from a Gaussian blur of this sigma (network-input pixels).
DETAIL_SIGMA = 1.0

HOG_SIZE = 96  # HOG is taken on the input resized to this side, whatever the model's size
CELL = 8
BINS = 9  # unsigned directions, 20 degrees each
COMPONENTS = 16


def hog(x: np.ndarray) -> np.ndarray:
    """(N, S, S, C) inputs in [0, 1] -> (N, cells*cells*BINS) HOG vectors."""
    grey = np.stack([_resized(image.mean(axis=-1)) for image in x])
    gy, gx = np.gradient(grey, axis=(1, 2))
    magnitude = np.hypot(gx, gy)
    direction = np.minimum((np.mod(np.arctan2(gy, gx), np.pi) / np.pi * BINS).astype(int), BINS - 1)
    n, cells = len(x), HOG_SIZE // CELL
    votes = np.eye(BINS, dtype=np.float32)[direction] * magnitude[..., None]
    hist = votes.reshape(n, cells, CELL, cells, CELL, BINS).sum(axis=(2, 4))
    # L2-Hys (Dalal & Triggs 2005): normalise, clip at 0.2, normalise again.
    hist = hist / np.sqrt((hist**2).sum(-1, keepdims=True) + 1e-10)
    hist = np.minimum(hist, 0.2)
    hist = hist / np.sqrt((hist**2).sum(-1, keepdims=True) + 1e-10)
    return hist.reshape(n, -1)


def _resized(grey: np.ndarray) -> np.ndarray:
    grey = grey.astype(np.float32)
    if grey.shape != (HOG_SIZE, HOG_SIZE):
        grey = cv2.resize(grey, (HOG_SIZE, HOG_SIZE), interpolation=cv2.INTER_AREA)
    return grey


def _hog_in_batches(x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    # hog() holds 9 floats per pixel while it bins: ~85 MB for 256 inputs of 96 px.
    return np.concatenate([hog(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])


def fit_layout(x_train: np.ndarray) -> dict[str, np.ndarray]:
    """The training slices' HOG subspace: mean and COMPONENTS principal directions."""
    features = _hog_in_batches(x_train)
    mean = features.mean(axis=0)
    # Right singular vectors of the centred data = principal directions, largest first.
    _, _, vt = np.linalg.svd(features - mean, full_matrices=False)
    return {
        "layout_mean": mean.astype(np.float32),
        "layout_components": vt[:COMPONENTS].astype(np.float32),
    }


def layout_scores(x: np.ndarray, params: dict[str, np.ndarray]) -> np.ndarray:
    """Squared distance of each input's HOG from the training subspace (higher = stranger)."""
    centred = _hog_in_batches(x) - params["layout_mean"]
    components = params["layout_components"]
    residual = centred - (centred @ components.T) @ components
    return (residual**2).sum(axis=1)


def fit_feature_distance(features: np.ndarray, planes) -> dict[str, np.ndarray]:
    """One Gaussian per MRI plane in the gate's features, with a covariance they share
    (Lee et al. 2018, "A simple unified framework for detecting out-of-distribution
    samples"): the planes' means and the shared precision matrix."""
    planes = np.asarray(planes)
    kinds = [p for p in MRI_PLANES if (planes == p).any()]
    means = np.stack([features[planes == p].mean(axis=0) for p in kinds])
    centred = np.concatenate([features[planes == p] - m for p, m in zip(kinds, means)])
    # A small ridge: some ReLU features are (nearly) never on for MRI slices.
    covariance = np.cov(centred.T) + FEATURE_RIDGE * np.eye(features.shape[1])
    return {
        "gate_feature_means": means.astype(np.float32),
        "gate_feature_precision": np.linalg.inv(covariance).astype(np.float32),
    }


def feature_distances(features: np.ndarray, params: dict[str, np.ndarray]) -> np.ndarray:
    """Squared Mahalanobis distance of each input's gate features to the nearest MRI plane."""
    precision = params["gate_feature_precision"].astype(np.float64)
    return np.min(
        [
            np.einsum("ij,jk,ik->i", d, precision, d)
            for d in (features - m for m in params["gate_feature_means"].astype(np.float64))
        ],
        axis=0,
    )


def anomaly_ratios(x: np.ndarray, reconstructions: np.ndarray) -> np.ndarray:
    """The autoencoder's mean squared error on each input over that input's fine detail.

    The autoencoder rebuilds a slice about as well as a slight blur would, so its
    raw error follows how much fine detail the slice has (log-log correlation
    0.91 on the bundled model's val): a sharp, healthy FLAIR slice scored as
    "unlike the training slices". Divided by the detail, the error says how much
    worse than a blur it rebuilds the input: about 1 for an MRI slice, more for
    what it never learnt to rebuild (README, "The autoencoder's check").
    """
    error = np.mean((x - reconstructions) ** 2, axis=(1, 2, 3))
    return error / np.maximum(fine_detail(x), 1e-6)


def fine_detail(x: np.ndarray) -> np.ndarray:
    """Each input's mean squared difference from its own Gaussian blur (DETAIL_SIGMA)."""
    x = np.asarray(x, np.float32)
    blurred = np.stack([cv2.GaussianBlur(image, (0, 0), DETAIL_SIGMA) for image in x])
    return np.mean((x - blurred.reshape(x.shape)) ** 2, axis=(1, 2, 3))


def background_levels(x: np.ndarray) -> np.ndarray:
    """How light each input's corners are within its own range: 0 = darkest, 1 = lightest.

    The crop is the head's bounding box, so its corners lie outside the head:
    air, dark on every MRI sequence. On a document they are paper. A letterboxed
    input's black bars are cut off first: its corners are the crop's.
    """
    return np.array([_corner_level(_without_bars(image)) for image in x.mean(axis=-1)])


def _without_bars(grey: np.ndarray) -> np.ndarray:
    """The input less the all-black rows and columns round it (a letterbox's bars:
    a crop's own edges touch the head, so they are never all black)."""
    rows, cols = np.flatnonzero(grey.max(axis=1) > 0), np.flatnonzero(grey.max(axis=0) > 0)
    if len(rows) == 0:
        return grey
    return grey[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def _corner_level(grey: np.ndarray) -> float:
    height, width = grey.shape
    yy, xx = np.mgrid[:height, :width]
    # Outside the inscribed ellipse, with a 5 % margin: the four corners.
    corners = np.hypot((yy - (height - 1) / 2) / height, (xx - (width - 1) / 2) / width) > 1.05 / 2
    low, high = np.percentile(grey, [1, 99])
    if not corners.any():  # a sliver of a crop
        return 0.0
    level = (np.median(grey[corners]) - low) / max(high - low, 1 / 255)
    return float(np.clip(level, 0.0, 1.0))


def failed_checks(scores: dict[str, np.ndarray], config: dict) -> dict[str, np.ndarray]:
    """For each check in CHECKS: where its score is over its threshold (bool arrays).

    A threshold missing from config (a model saved before the check) never
    fires, unless FALLBACK_THRESHOLDS has one.
    """
    return {
        name: np.asarray(scores[name]) > limit(threshold, config) for name, threshold, _ in CHECKS
    }


def limit(threshold, config: dict) -> float:
    """A check's threshold: fixed, or config.json's (FALLBACK_THRESHOLDS, else never)."""
    if not isinstance(threshold, str):
        return threshold
    return config.get(threshold, FALLBACK_THRESHOLDS.get(threshold, float("inf")))


def reasons(scores: dict[str, float], config: dict) -> list[str]:
    """What each check that flags one input means, in words, with its score and threshold."""
    failed = failed_checks(scores, config)
    out = []
    for name, threshold, meaning in CHECKS:
        if failed[name]:
            label = name.replace("_", " ")
            out.append(
                f"{meaning} ({label} {scores[name]:.3g} > threshold {limit(threshold, config):.3g})"
            )
    return out
