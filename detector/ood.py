"""The layout check: an out-of-distribution score beside the autoencoder's.

Why a second score: the autoencoder rebuilds almost any smooth picture well
(a photo of a rocket, a retina, a sagittal MRI slice), so its error flags none
of them, while the classifier's own features place the skull-less template
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
