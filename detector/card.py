"""Fill the model-card template (model_card.md) from a model's config and assets.

The Hub metadata (YAML front matter, including `model-index`) is built with
huggingface_hub's ModelCardData/EvalResult so it is always valid; the prose is
a jinja2 template fed with ready-formatted strings, so that a model without
metrics (a test model) renders "not evaluated" instead of failing.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .ood import BACKGROUND_LIMIT, CHROMA_LIMIT

TEMPLATE = Path(__file__).resolve().parent.parent / "model_card.md"
MODEL_NAME = "brain-tumor-mri-detector"
NOT_EVALUATED = "not evaluated"
# The four test metrics of the model-index, in the order the card shows them.
HEADLINE_METRICS = {
    "accuracy": "Accuracy",
    "auroc": "AUROC",
    "sensitivity": "Sensitivity",
    "specificity": "Specificity",
}
# Known plots, in reading order, with their captions; other .png assets follow.
PLOT_CAPTIONS = {
    "accuracy_curve.png": "Accuracy per epoch, train vs validation",
    "loss_curve.png": "Loss per epoch, train vs validation",
    "roc.png": "ROC on the leak-free test split: CNN vs autoencoder reconstruction error",
    "confusion.png": "Confusion matrix on the test split",
    "type_confusion.png": "Tumour-type confusion matrix on the test split's tumours of a known type",
    "reliability.png": "Reliability diagram (calibrated probabilities, test split)",
    "test_examples.png": "Test slices with truth and prediction",
    "reconstructions.png": "Autoencoder reconstructions of test slices",
}


def render_model_card(config: dict, assets: dict) -> str:
    """README.md for a model directory: Hub metadata + the filled template."""
    card = ModelCard.from_template(
        card_data(config),
        template_str=TEMPLATE.read_text(encoding="utf-8"),
        **card_context(config, assets),
    )
    # Optional sections leave blank lines behind; Markdown needs at most one.
    return re.sub(r"\n{3,}", "\n\n", str(card))


# ---------------------------------------------------------------- metadata
def card_data(config: dict) -> ModelCardData:
    # Br35H has no fixed Hub dataset id, so `datasets` is left out rather than
    # pointing at a page that does not exist; the card's text names the source.
    results = eval_results(_metrics(config).get("test", {}), test_set_name(config))
    results += type_eval_results(_metrics(config).get("type_test") or {}, test_set_name(config))
    return ModelCardData(
        model_name=MODEL_NAME if results else None,  # model-index needs a name; nothing else does
        library_name="keras",
        pipeline_tag="image-classification",
        license="mit",
        tags=[
            "medical-imaging",
            "mri",
            "brain-tumor",
            "keras",
            "tensorflow",
            "anomaly-detection",
        ],
        eval_results=results or None,
    )


def test_set_name(config: dict) -> str:
    """What the test split is, in words, for the model-index."""
    held_out = (config.get("split") or {}).get("held_out")
    if held_out:
        return f"{held_out}, whole collection, held out of training"
    return f"{trained_on(config, 'brain MRI')}, leak-free split by group and patient"


def trained_on(config: dict, unknown: str) -> str:
    """The collections a model was trained on, in words (older models recorded one folder name)."""
    data = (config.get("training") or {}).get("data")
    return ", ".join(data) if isinstance(data, list) else (data or unknown)


def eval_results(test_metrics: dict, test_set: str = "brain MRI") -> list[EvalResult]:
    """model-index entries for the test metrics that have a finite value."""
    results = []
    for key, name in HEADLINE_METRICS.items():
        value = metric_value(test_metrics.get(key))
        if value is None:
            continue
        results.append(
            EvalResult(
                task_type="image-classification",
                task_name="Brain tumour detection (MRI slice)",
                dataset_type="brain-mri-union",
                dataset_name=test_set,
                dataset_split="test",
                metric_type=key,
                metric_name=name,
                metric_value=round(value, 4),
            )
        )
    return results


TYPE_METRICS = {"accuracy": "Accuracy", "macro_f1": "Macro-F1"}


def type_eval_results(type_test: dict, test_set: str) -> list[EvalResult]:
    """model-index entries of the tumour-type network (a second task), on the test tumours."""
    return [
        EvalResult(
            task_type="image-classification",
            task_name="Brain tumour type: glioma, meningioma, pituitary (MRI slice)",
            # The Hub groups a model-index's results by task and dataset type: its own
            # type keeps this task apart from detection.
            dataset_type="brain-mri-union-tumours",
            dataset_name=f"{test_set}: tumours of a known type",
            dataset_split="test",
            metric_type=key,
            metric_name=name,
            metric_value=round(value, 4),
        )
        for key, name in TYPE_METRICS.items()
        if (value := metric_value(type_test.get(key))) is not None
    ]


# How the averaged type networks were made (training.ENSEMBLES), in the card's words.
MADE = {
    "seeds": "of consecutive seeds",
    "snapshots": "the snapshots of one fit whose learning rate restarts",
}


def type_context(config: dict) -> dict | None:
    """The card's tumour-type section, formatted; None for a model without a type network."""
    figures = _metrics(config).get("type_test")
    if not config.get("tumor_types") or not figures:
        return None
    pointing = _metrics(config).get("pointing_game") or {}
    detector_game = pointing.get("classifier") or {}
    return {
        "n": figures["n"],
        "image_size": config.get("type_image_size"),
        "members": (config.get("training") or {}).get("type_members") or 1,
        "made": MADE[(config.get("training") or {}).get("type_ensemble") or "seeds"],
        "accuracy": fmt_metric(figures["accuracy"]),
        "macro_f1": fmt_metric(figures["macro_f1"]),
        "rows": [
            {"type": name, "n": row["n"], "precision": fmt_metric(row["precision"]), "recall": fmt_metric(row["recall"])}
            for name, row in figures["per_type"].items()
        ],
        "by_collection": ", ".join(f"{c} {v:.3f}" for c, v in (figures.get("accuracy_by_collection") or {}).items()),
        "pointing": {
            "n": detector_game.get("n"),
            "classifier": fmt_percent(detector_game.get("hits")),
            "type_classifier": fmt_percent((pointing.get("type_classifier") or {}).get("hits")),
            "centre": fmt_percent(detector_game.get("centre_baseline")),
        } if pointing else None,
        "cross_validation": type_cv_table(config["type_results"]) if config.get("type_results") else None,
    }  # fmt: skip


def type_cv_table(results: dict) -> str:
    """Markdown: benchmarks/tumor_type.py's 5-fold figures beside the published ones, then
    the cross-collection rows."""
    summary = results["cv_summary"]
    columns = ["accuracy", "macro_f1", *(k for k in summary if k.startswith("recall "))]
    lines = ["| figshare, patient-level 5-fold | " + " | ".join(c.replace("_", "-") for c in columns) + " |",
             "|---|" + "---|" * len(columns)]  # fmt: skip
    cells = [f"{summary[c]['mean']:.3f} ± {summary[c]['sd'] or 0:.3f}" for c in columns]
    row = f"the type network's recipe, {networks_measured(results)} (mean ± sd over folds)"
    lines.append(f"| {row} | " + " | ".join(cells) + " |")
    for name, accuracy in results.get("published", {}).items():
        lines.append(f"| {name} | {accuracy:.3f} |" + " - |" * (len(columns) - 1))
    for name, m in (results.get("cross_collection") or {}).items():
        recalls = [
            fmt_metric(m["per_type"][c.removeprefix("recall ")]["recall"]) for c in columns[2:]
        ]
        lines.append(f"| {name} ({m['n']} slices) | {fmt_metric(m['accuracy'])} | {fmt_metric(m['macro_f1'])} | "
                     + " | ".join(recalls) + " |")  # fmt: skip
    return "\n".join(lines)


def networks_measured(results: dict) -> str:
    """How many type networks benchmarks/tumor_type.py averaged for its figures: they
    may be of a recipe before the shipped one (see config["training"]["type_members"])."""
    recipe = results.get("recipe", {})
    members = recipe.get("members", 1)
    if members == 1:
        return "one network"
    made = "snapshots of one fit" if recipe.get("ensemble") == "snapshots" else "networks"
    return f"{members} {made} averaged"


# ----------------------------------------------------------------- context
def card_context(config: dict, assets: dict) -> dict:
    metrics = _metrics(config)
    others = comparisons(config)
    split = config.get("split") or {}
    band = config.get("inconclusive_band")
    training = config.get("training") or {}
    return {
        "n_test": metrics.get("test", {}).get("n") or NOT_EVALUATED,
        "comparisons": [header for header, _ in others],
        "results": results_rows(metrics.get("test", {}), *[test for _, test in others]),
        "results_excluding_suspects": results_rows(metrics.get("test_excluding_suspects") or {}),
        "has_excluding_suspects": bool(metrics.get("test_excluding_suspects")),
        "evaluated": bool(eval_results(metrics.get("test", {}))),
        "split": {
            key: split.get(key, "?")
            for key in ("method", "threshold", "clusters", "train", "val", "test")
        }
        if split
        else None,
        "max_test_correlation": fmt_number(split.get("max_test_correlation")),
        "temperature": fmt_number(config.get("temperature")),
        "ece_val": fmt_number(metrics.get("ece_val")),
        "ece_test": fmt_number(metrics.get("ece_test")),
        "decision_threshold": fmt_number(config.get("decision_threshold")),
        "band": f"[{fmt_number(band[0])}, {fmt_number(band[1])}]" if band else NOT_EVALUATED,
        "inconclusive_rate": fmt_percent(metrics.get("inconclusive_rate_test")),
        "autoencoder_auroc": fmt_number(metrics.get("autoencoder_test_auroc")),
        "anomaly_ratio_threshold": fmt_number(config.get("anomaly_ratio_threshold"), ".3g"),
        "layout_threshold": fmt_number(config.get("layout_threshold"), ".3g"),
        "chroma_limit": f"{CHROMA_LIMIT:g}",
        "background_limit": f"{BACKGROUND_LIMIT:g}",
        "ood_rate_val": fmt_percent(metrics.get("ood_rate_val")),
        "ood_rate_val_axial": fmt_percent(metrics.get("ood_rate_val_axial")),
        "ood_rate_test_axial": fmt_percent(metrics.get("ood_rate_test_axial")),
        "ood_rate_test": fmt_percent(metrics.get("ood_rate_test")),
        "suspects": (config.get("label_audit") or {}).get("suspects"),
        "input_shape": input_shape(config.get("preprocessing") or {}),
        "arch": config.get("arch", "default"),
        "training": training,
        "training_seconds": training.get("fit_seconds") or training.get("seconds"),
        "plots": plots(assets),
        "collections": trained_on(config, ""),
        "subgroup_table": subgroup_table(metrics["test_by_subgroup"])
        if metrics.get("test_by_subgroup")
        else None,
        "held_out_table": held_out_table(config["held_out"]) if config.get("held_out") else None,
        "plane_gate_table": plane_gate_table(metrics["plane_gate"])
        if metrics.get("plane_gate")
        else None,
        "plane_threshold": fmt_number(config.get("plane_threshold")),
        "gate_members": ((metrics.get("plane_gate") or {}).get("train") or {}).get("members", 1),
        "gate_naming": (metrics.get("plane_gate") or {}).get("naming"),
        "gate_distance_threshold": fmt_number(config.get("gate_distance_threshold"), ".4g"),
        "intensity": (config.get("preprocessing") or {}).get("intensity", "raw"),
        "tumor_type": type_context(config),
        "other_files": sorted(name for name in assets if not name.endswith(".png")),
    }


HELD_OUT_COLUMNS = {
    "collection": "held out", "n": "slices", "tumors": "tumours", "auroc": "AUROC",
    "sensitivity": "sensitivity", "specificity": "specificity",
    "sartaj axial normals: specificity": "sartaj axial normals: specificity",
    "sagittal/coronal normals: specificity": "sagittal/coronal normals: specificity",
    "axial by the plane gate: n": "slices the plane gate passes",
    "axial by the plane gate: auroc": "... their AUROC",
    "axial by the plane gate: sensitivity": "... sensitivity",
    "axial by the plane gate: specificity": "... specificity",
    "flagged_unlike_training": "share flagged as unlike the training MRIs",
    "answered": "share answered (not flagged, not inconclusive)",
    "answers wrong": "... of those answers, wrong",
}  # fmt: skip
HELD_OUT_DETAILS = {
    "trained_on": "trained on (slices)", "image_size": "input (px)", "intensity": "intensity",
    "letterbox": "letterboxed",
    "augment": "augment", "planes": "planes", "balance": "balance",
    "synthetic_tumours": "synthetic tumours", "lesion_radius": "lesion radius (of the side)",
    "plaque_mimics": "plaque mimics", "lesions_painted": "painted",
    "pasted_tumours": "pasted tumours (x the tumours)",
    "asymmetry": "mirror difference", "mix_style": "MixStyle", "epochs": "epochs",
    "fit_seconds": "fit (s)",
}  # fmt: skip
# detector.plane's test targets: the gate's verdict, then with each thing that adds flags.
PLANE_GATE_COLUMNS = {
    "": "the gate's verdict",
    "with_distance": "... or its feature distance",
    "whole_detector": "the whole detector",
}


def plane_gate_table(gate: dict) -> str:
    """Markdown: each of the gate's targets on the test split, the share flagged in each
    column of PLANE_GATE_COLUMNS that the metrics hold (older gates: the first only)."""
    columns = {key: name for key, name in PLANE_GATE_COLUMNS.items() if not key or key in gate}
    tables = [(gate[key] if key else gate)["targets"] for key in columns]
    header = "| target | n | " + " | ".join(columns.values()) + " |"
    lines = [header, "|---" * (len(columns) + 2) + "|"]
    for row in zip(*tables):
        what = row[0]["target"].replace(">=", "≥").replace("<=", "≤")
        rates = " | ".join(fmt_percent(t["rate"]) for t in row)
        lines.append(f"| {what} | {row[0]['n']} | {rates} |")
    return "\n".join(lines)


SUBGROUP_COLUMNS = ("n", "tumors", "auroc", "sensitivity", "specificity")


def held_out_table(summaries: list[dict], details: bool = False) -> str:
    """Markdown table of evaluation.held_out_summary rows; '-' where a class is missing."""
    columns = {**HELD_OUT_COLUMNS, **(HELD_OUT_DETAILS if details else {})}
    lines = ["| " + " | ".join(columns.values()) + " |", "|" + "---|" * len(columns)]
    for summary in summaries:
        lines.append("| " + " | ".join(_cell(summary.get(key)) for key in columns) + " |")
    return "\n".join(lines)


def subgroup_table(groups: dict) -> str:
    """Markdown table of metrics.test_by_subgroup: one row per collection or subgroup."""
    lines = [
        "| test slices of | " + " | ".join(SUBGROUP_COLUMNS) + " |",
        "|---|" + "---|" * len(SUBGROUP_COLUMNS),
    ]
    for name, row in groups.items():
        lines.append(
            f"| {name} | " + " | ".join(_cell(row.get(key)) for key in SUBGROUP_COLUMNS) + " |"
        )
    return "\n".join(lines)


def _cell(value) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def input_shape(preprocessing: dict) -> str:
    size, channels = preprocessing.get("image_size", "?"), preprocessing.get("channels", 1)
    return f"{size}×{size} pixels, {'grey' if channels == 1 else f'{channels} channels'}"


def comparisons(config: dict) -> list[tuple[str, dict]]:
    """(column header, test metrics) of the other networks to show beside this one.

    Two sources: metrics.report_network (the report's CNN run by the trainer)
    and baselines (other model directories named with train.py --compare-with).
    """
    report = _metrics(config).get("report_network") or {}
    columns = []
    if report.get("test"):
        columns.append(("Report's CNN, same split", report["test"]))
    if report.get("random_split_test"):
        columns.append(("Report's CNN, random split (leaky)", report["random_split_test"]))
    for baseline in config.get("baselines") or []:
        network = (
            "Report's CNN" if baseline.get("arch") == "report" else f"{baseline.get('arch')} CNN"
        )
        if baseline.get("same_test_set"):
            where = "same test set"
        else:
            where = f"{baseline.get('split', '?')} split, its own test set"
        columns.append(
            (f"{network} (`{baseline.get('name')}`), {where}", baseline.get("test") or {})
        )
    return columns


def results_rows(*tests: dict) -> list[dict]:
    """One row per headline metric: its name, then one formatted cell per model."""
    return [
        {"name": name, "cells": [fmt_metric((test or {}).get(key)) for test in tests]}
        for key, name in HEADLINE_METRICS.items()
    ]


def plots(assets: dict) -> list[dict]:
    """Only the plots this model directory actually holds, known ones first."""
    known = [name for name in PLOT_CAPTIONS if name in assets]
    others = sorted(n for n in assets if n.endswith(".png") and n not in PLOT_CAPTIONS)
    return [
        {"file": name, "caption": PLOT_CAPTIONS.get(name, name[:-4].replace("_", " "))}
        for name in known + others
    ]


# -------------------------------------------------------------- formatting
def _metrics(config: dict) -> dict:
    return config.get("metrics") or {}


def metric_value(metric) -> float | None:
    """The value of a metric stored as {value, ci95} or as a bare number; None if absent or NaN."""
    value = metric.get("value") if isinstance(metric, dict) else metric
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    return None


def fmt_metric(metric) -> str:
    """'0.953 [0.936, 0.968]' (value and 95 % interval), or 'not evaluated'."""
    value = metric_value(metric)
    if value is None:
        return NOT_EVALUATED
    ci = metric.get("ci95") if isinstance(metric, dict) else None
    if ci and all(metric_value(bound) is not None for bound in ci):
        return f"{value:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"
    return f"{value:.3f}"


def fmt_number(value, spec: str = ".3f") -> str:
    value = metric_value(value)
    return NOT_EVALUATED if value is None else format(value, spec)


def fmt_percent(value) -> str:
    value = metric_value(value)
    return NOT_EVALUATED if value is None else f"{value:.1%}"
