"""Metrics with bootstrap intervals, calibration, and the plots of a model directory."""

from __future__ import annotations

import io

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.stats import bootstrap
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
    recall_score,
    roc_auc_score,
    roc_curve,
)

METRICS = {
    "accuracy": lambda y, p, t: accuracy_score(y, p >= t),
    "auroc": lambda y, p, t: roc_auc_score(y, p) if 0 < y.mean() < 1 else np.nan,
    "sensitivity": lambda y, p, t: recall_score(y, p >= t, pos_label=1, zero_division=np.nan),
    "specificity": lambda y, p, t: recall_score(y, p >= t, pos_label=0, zero_division=np.nan),
}


def classification_metrics(
    y: np.ndarray, p: np.ndarray, threshold: float = 0.5, *, n_resamples: int = 1000, seed: int = 0
) -> dict:
    """Accuracy, AUROC, sensitivity, specificity, each {value, ci95: [low, high]}.

    Intervals: percentile bootstrap over slices (scipy.stats.bootstrap, paired).
    """
    y, p = np.asarray(y), np.asarray(p, dtype=np.float64)
    out = {"n": int(len(y)), "threshold": float(threshold)}
    for name, metric in METRICS.items():
        ci = bootstrap(
            (y, p),
            lambda yy, pp: metric(yy, pp, threshold),
            paired=True,
            vectorized=False,
            n_resamples=n_resamples,
            method="percentile",
            random_state=seed,
        ).confidence_interval
        out[name] = {"value": float(metric(y, p, threshold)), "ci95": [float(ci.low), float(ci.high)]}
    return out


def type_metrics(
    y: np.ndarray, probabilities: np.ndarray, types: list[str], *, n_resamples: int = 1000, seed: int = 0
) -> dict:
    """Tumour-type figures of true type indices y and P(each type): accuracy and
    macro-F1 with bootstrap intervals, precision and recall per type with theirs,
    and the confusion matrix (rows true, columns predicted, in ``types`` order)."""
    y, predicted = np.asarray(y), np.asarray(probabilities).argmax(axis=1)
    labels = list(range(len(types)))

    def interval(statistic) -> dict:
        ci = bootstrap(
            (y, predicted), statistic, paired=True, vectorized=False,
            n_resamples=n_resamples, method="percentile", random_state=seed,
        ).confidence_interval  # fmt: skip
        return {"value": float(statistic(y, predicted)), "ci95": [float(ci.low), float(ci.high)]}

    def per_type(which: int, k: int):
        return lambda a, b: precision_recall_fscore_support(
            a, b, labels=labels, zero_division=np.nan
        )[which][k]

    return {
        "n": int(len(y)),
        "accuracy": interval(accuracy_score),
        "macro_f1": interval(lambda a, b: f1_score(a, b, labels=labels, average="macro", zero_division=0)),
        "per_type": {
            name: {"n": int(np.sum(y == k)), "precision": interval(per_type(0, k)), "recall": interval(per_type(1, k))}
            for k, name in enumerate(types)
        },
        "confusion": confusion_matrix(y, predicted, labels=labels).tolist(),
    }


def mirrored_probabilities(network, x: np.ndarray) -> np.ndarray:
    """The network's outputs, averaged over each input and its mirror image as the
    detector does (config["tta_flip"])."""
    return (network.predict(x, verbose=0) + network.predict(x[:, :, ::-1], verbose=0)) / 2


def pointing_game(heat_maps: np.ndarray, boxes: np.ndarray) -> dict[str, float]:
    """Share of slices whose heat-map peak falls inside the tumour's box, and the
    same for the centre of the slice (the baseline a heat map has to beat).

    heat_maps: (N, S, S); boxes: (N, 4) as (x0, y0, x1, y1) in [0, 1] of the same square.
    """
    side = heat_maps.shape[1]
    peak_row, peak_col = np.unravel_index(heat_maps.reshape(len(heat_maps), -1).argmax(axis=1), (side, side))

    def inside(col, row) -> np.ndarray:
        x, y = (np.asarray(col) + 0.5) / side, (np.asarray(row) + 0.5) / side
        return (boxes[:, 0] <= x) & (x <= boxes[:, 2]) & (boxes[:, 1] <= y) & (y <= boxes[:, 3])

    return {
        "n": int(len(boxes)),
        "hits": float(np.mean(inside(peak_col, peak_row))),
        "centre_baseline": float(np.mean(inside(side / 2 - 0.5, side / 2 - 0.5))),
    }


# Non-axial planes as the collections label them.
NON_AXIAL = ("sagittal", "coronal", "sagittal-or-coronal")
# Normals on which a model that learnt a collection or a plane, not tumours, fails.
SHORTCUT_GROUPS = ("sartaj axial normals", "sagittal/coronal normals")
# The test slices the plane gate lets through: the only ones a user gets a P(tumour) for.
GATE_PASSED = "axial by the plane gate"
SUBGROUP_FIGURES = ("auroc", "sensitivity", "specificity")


def subgroups(slices, index: np.ndarray) -> dict[str, np.ndarray]:
    """Positions within ``index`` of each collection, and of the normals that
    reveal a shortcut: sartaj's axial normals (T1 post-contrast, like
    figshare's tumours) and sagittal/coronal normals (most tumours of
    figshare are sagittal or coronal)."""
    collections = np.array(slices.collections)[index]
    planes = np.array(slices.planes)[index]
    normal = slices.labels[index] == 0
    groups = {c: collections == c for c in sorted(set(collections))}
    groups[SHORTCUT_GROUPS[0]] = (collections == "sartaj") & (planes == "axial") & normal
    groups[SHORTCUT_GROUPS[1]] = np.isin(planes, NON_AXIAL) & normal
    return {name: np.flatnonzero(members) for name, members in groups.items() if members.any()}


def subgroup_metrics(y: np.ndarray, p: np.ndarray, threshold: float = 0.5) -> dict:
    """n, tumours, and each of METRICS that the subgroup's classes define (else None)."""
    out = {"n": int(len(y)), "tumors": int(np.sum(y == 1))}
    for name, metric in METRICS.items():
        value = float(metric(np.asarray(y), np.asarray(p, np.float64), threshold))
        out[name] = None if np.isnan(value) else round(value, 4)
    return out


def answers(y: np.ndarray, said: list[str], flagged: np.ndarray) -> dict:
    """What the app told a user about each slice (``said``: BrainTumorDetector.label_for's
    labels; ``flagged``: a check fired): flagged, inconclusive, or an answer (tumour or
    normal); and how many of the answers are wrong. On a collection it never saw,
    AUROC says how well the slices are ranked; this says how often a plain answer
    misleads."""
    y, said, flagged = np.asarray(y), np.asarray(said), np.asarray(flagged, bool)
    answered = said != "inconclusive"  # label_for calls every flagged slice inconclusive
    return {
        "n": len(y),
        "flagged": int(flagged.sum()),
        "inconclusive": int((~flagged & ~answered).sum()),
        "answered": int(answered.sum()),
        "wrong": int((answered & ((said == "tumor") != (y == 1))).sum()),
    }


def held_out_summary(config: dict) -> dict:
    """What a `train.py --hold-out COLLECTION` model scored on that collection."""
    held_out = config["split"].get("held_out")
    if not held_out:
        raise ValueError("Not a `train.py --hold-out` model: its test split is no whole collection.")
    groups = config["metrics"]["test_by_subgroup"]
    passed = groups.get(GATE_PASSED) or {}  # runs without a gate have none
    # The detector's train + val slices: fewer than the split's with --planes axial.
    split = config["split"]
    detector_slices = config["training"].get("slices") or split["train"] + split["val"]
    return {
        "collection": held_out,
        **{k: groups[held_out][k] for k in ("n", "tumors", *SUBGROUP_FIGURES)},
        **{f"{g}: specificity": (groups.get(g) or {}).get("specificity") for g in SHORTCUT_GROUPS},
        **{f"{GATE_PASSED}: {k}": passed.get(k) for k in ("n", *SUBGROUP_FIGURES)},
        "flagged_unlike_training": config["metrics"]["ood_rate_test"],
        **_answer_shares(config["metrics"].get("answers_test")),
        "trained_on": detector_slices,
        "image_size": config["preprocessing"]["image_size"],
        "intensity": config["preprocessing"].get("intensity", "raw"),
        "letterbox": "yes" if config["preprocessing"].get("letterbox") else "no",
        "augment": config["training"].get("augment"),
        "planes": config["training"].get("planes", "all"),
        "balance": config["training"].get("balance", "class"),
        "synthetic_tumours": config["training"].get("synthetic_tumours", 0),
        "lesion_radius": _radius_range(config["training"].get("lesion_radius")),
        "plaque_mimics": config["training"].get("plaque_mimics", 0),
        "pasted_tumours": config["training"].get("pasted_tumours", 0),
        "lesions_painted": _when_painted(config["training"]),
        "asymmetry": "yes" if config["training"].get("asymmetry") else "no",
        "mix_style": "yes" if config["training"].get("mix_style") else "no",
        "epochs": config["training"]["epochs"],
        "fit_seconds": config["training"]["fit_seconds"],
    }


def _when_painted(training: dict) -> str | None:
    """"once" or "each epoch" (train.py --fresh-lesions); None without painted slices."""
    if not (training.get("synthetic_tumours") or training.get("plaque_mimics")):
        return None
    return "each epoch" if training.get("fresh_lesions") else "once"


def _radius_range(radius: list | None) -> str | None:
    """The painted lesions' radius range as one cell, "0.05-0.18"; None without lesions."""
    return "-".join(f"{r:g}" for r in radius) if radius else None


def _answer_shares(counts: dict | None) -> dict:
    """answers() as shares: of all slices, answered; of the answers, wrong (None: a run
    made before train.py counted them)."""
    if not counts:
        return {"answered": None, "answers wrong": None}
    answered = counts["answered"]
    return {
        "answered": answered / counts["n"],
        "answers wrong": counts["wrong"] / answered if answered else None,
    }


def fit_temperature(y: np.ndarray, p: np.ndarray) -> float:
    """Temperature T minimising validation log-loss of sigmoid(logit(p) / T)."""
    logits = _logit(p)
    y = np.asarray(y, np.float64)

    def nll(log_t: float) -> float:
        z = logits / np.exp(log_t)
        return float(np.mean(np.logaddexp(0, z) - y * z))

    return float(np.exp(minimize_scalar(nll, bounds=(-3, 3), method="bounded").x))


def _logit(p) -> np.ndarray:
    p = np.clip(np.asarray(p, np.float64), 1e-7, 1 - 1e-7)
    return np.log(p / (1 - p))


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """ECE over equal-width bins of P(tumour)."""
    y, p = np.asarray(y), np.asarray(p)
    which = np.minimum((p * bins).astype(int), bins - 1)
    gaps = [abs(y[which == b].mean() - p[which == b].mean()) * np.mean(which == b)
            for b in range(bins) if np.any(which == b)]  # fmt: skip
    return float(np.sum(gaps))


def choose_inconclusive_band(
    y: np.ndarray, p: np.ndarray, threshold: float = 0.5, target_accuracy: float = 0.99
) -> list[float]:
    """The narrowest band around the threshold outside which val accuracy >= target.

    Slices inside the band are called "inconclusive" rather than risk a wrong call.
    """
    for half_width in np.arange(0.0, 0.46, 0.025):
        outside = np.abs(p - threshold) > half_width
        if outside.any() and accuracy_score(y[outside], p[outside] >= threshold) >= target_accuracy:
            break
    return [round(float(threshold - half_width), 3), round(float(threshold + half_width), 3)]


# --------------------------------------------------------------------- plots
def _figure_png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_history(history: dict) -> dict[str, bytes]:
    """Accuracy and loss curves, train vs val (the report's figures 2 and 3)."""
    plt = _pyplot()
    plots = {}
    for key in ("accuracy", "loss"):
        fig, ax = plt.subplots(figsize=(5, 3.5))
        epochs = np.arange(1, len(history[key]) + 1)
        ax.plot(epochs, history[key], label="train")
        ax.plot(epochs, history[f"val_{key}"], label="validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.legend()
        plots[f"{key}_curve.png"] = _figure_png(fig)
    return plots


def plot_roc(y: np.ndarray, curves: dict[str, np.ndarray]) -> bytes:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    for name, scores in curves.items():
        fpr, tpr, _ = roc_curve(y, scores)
        ax.plot(fpr, tpr, label=f"{name} (AUROC {roc_auc_score(y, scores):.3f})")
    ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.set_xlabel("1 - specificity")
    ax.set_ylabel("sensitivity")
    ax.legend(loc="lower right")
    ax.set_title("ROC on the leak-free test split")
    return _figure_png(fig)


def plot_confusion(y: np.ndarray, p: np.ndarray, threshold: float) -> bytes:
    plt = _pyplot()
    matrix = confusion_matrix(y, p >= threshold, labels=[0, 1])
    fig, ax = plt.subplots(figsize=(3.8, 3.4))
    ax.imshow(matrix, cmap="Blues")
    for (i, j), count in np.ndenumerate(matrix):
        ax.text(j, i, str(count), ha="center", va="center", fontsize=14)
    ax.set_xticks([0, 1], ["normal", "tumor"])
    ax.set_yticks([0, 1], ["normal", "tumor"])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    return _figure_png(fig)


def plot_type_confusion(matrix: list[list[int]], types: list[str]) -> bytes:
    """The tumour-type confusion matrix, counts and each true type's share."""
    plt = _pyplot()
    matrix = np.asarray(matrix)
    shares = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(4.6, 4.0))
    ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for (i, j), count in np.ndenumerate(matrix):
        colour = "white" if shares[i, j] > 0.6 else "black"
        ax.text(j, i, f"{count}\n{shares[i, j]:.0%}", ha="center", va="center", fontsize=11, color=colour)
    ticks = range(len(types))
    ax.set_xticks(ticks, types)
    ax.set_yticks(ticks, types)
    ax.set_xlabel("predicted type")
    ax.set_ylabel("true type")
    ax.set_title("Tumour type, leak-free test split")
    return _figure_png(fig)


def plot_reliability(y: np.ndarray, p: np.ndarray, bins: int = 10) -> bytes:
    plt = _pyplot()
    edges = np.linspace(0, 1, bins + 1)
    which = np.minimum((p * bins).astype(int), bins - 1)
    centres = [p[which == b].mean() for b in range(bins) if np.any(which == b)]
    rates = [y[which == b].mean() for b in range(bins) if np.any(which == b)]
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.plot(centres, rates, "o-")
    ax.set_xticks(edges[::2])
    ax.set_xlabel("predicted P(tumour)")
    ax.set_ylabel("observed tumour rate")
    ax.set_title(f"Reliability (ECE {expected_calibration_error(y, p, bins):.3f})")
    return _figure_png(fig)


def plot_examples(images: list[np.ndarray], titles: list[str], columns: int = 5) -> bytes:
    """A grid of grey images with a caption each (the report's figure 5)."""
    plt = _pyplot()
    rows = int(np.ceil(len(images) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(2.4 * columns, 2.7 * rows))
    for ax in np.ravel(axes):
        ax.axis("off")
    for ax, image, title in zip(np.ravel(axes), images, titles):
        ax.imshow(image, cmap="gray", vmin=0, vmax=255)
        ax.set_title(title, fontsize=8)
    return _figure_png(fig)
