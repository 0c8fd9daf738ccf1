"""Label audit: slices whose label disagrees confidently with out-of-fold predictions.

A small, fast CNN is cross-validated by near-duplicate cluster (so a slice
is never judged by a model that saw its copy); cleanlab ranks the slices
whose given label is least likely under those out-of-fold probabilities.
"""

from __future__ import annotations

import csv
import io

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from preprocessing import PreprocessConfig

AUDIT_INPUT = PreprocessConfig(image_size=64, channels=1)


def out_of_fold_probabilities(
    slices, clusters: np.ndarray, *, folds: int = 3, epochs: int = 12, seed: int = 0
) -> np.ndarray:
    """P(tumour) for every slice from a model trained on the other folds."""
    from .training import fit_classifier

    x, y = slices.inputs(AUDIT_INPUT), slices.labels
    oof = np.zeros(len(y))
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    for fold, (fit_i, held_i) in enumerate(splitter.split(x, y, clusters)):
        model, _ = fit_classifier(
            "report", (x[fit_i], y[fit_i]), (x[held_i], y[held_i]), epochs=epochs,
            batch_size=64, seed=seed + fold, augment="geometric", select_on_val=False, verbose=0,
        )  # fmt: skip
        oof[held_i] = model(x[held_i], training=False).numpy()[:, 0]
    return oof


def find_suspects(labels: np.ndarray, oof: np.ndarray) -> np.ndarray:
    """Indices of likely label errors, most suspicious first (cleanlab)."""
    from cleanlab.filter import find_label_issues

    probabilities = np.stack([1 - oof, oof], axis=1)
    return find_label_issues(labels, probabilities, return_indices_ranked_by="self_confidence")


def suspects_csv(slices, suspects: np.ndarray, oof: np.ndarray, excluded: set[str]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["file", "sha256", "given_label", "oof_p_tumor", "excluded_from_training"])
    for i in suspects:
        name = slices.names[i]
        label = "tumor" if slices.labels[i] else "normal"
        writer.writerow([name, slices.sha256[i], label, f"{oof[i]:.3f}", name in excluded])
    return buffer.getvalue().encode()


def suspects_plot(slices, suspects: np.ndarray, oof: np.ndarray, limit: int = 30) -> bytes:
    from .evaluation import plot_examples

    shown = suspects[:limit]
    titles = [
        f"{slices.names[i]}\nlabel {'tumor' if slices.labels[i] else 'normal'}, p={oof[i]:.2f}"
        for i in shown
    ]
    return plot_examples([slices.squares[i] for i in shown], titles, columns=6)
