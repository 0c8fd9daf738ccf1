"""Held-out-collection table: how models fare on a collection they never saw.

Each model directory is one `train.py --hold-out COLLECTION` run; its test
split is that collection whole. Prints a Markdown table, one row a run, or
with --mean one row a recipe (runs that differ only in seed), mean ± standard
deviation over its seeds:

    for c in br35h sartaj figshare ms oasis; do
      python train.py --data ../shared/data/{br35h,sartaj,figshare,ms,oasis} --hold-out $c \\
          --out runs/held-out/$c --ae-epochs 2 --cache-dir runs/cache --exclude label_exclusions.txt
    done
    python benchmarks/held_out.py runs/held-out/*
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detector.card import held_out_table
from detector.evaluation import held_out_summary

RECIPE = ("collection", "image_size", "intensity", "augment", "planes", "epochs")
FIGURES = ("auroc", "sensitivity", "specificity", "sartaj axial normals: specificity",
           "sagittal/coronal normals: specificity", "axial by the plane gate: auroc",
           "axial by the plane gate: sensitivity", "axial by the plane gate: specificity")  # fmt: skip


def mean_table(summaries: list[dict]) -> str:
    """One row per recipe: each figure as mean ± sd over the seeds."""
    recipes: dict[tuple, list[dict]] = {}
    for summary in summaries:
        recipes.setdefault(tuple(summary[k] for k in RECIPE), []).append(summary)
    header = ["held out", "input (px)", "intensity", "augment", "planes", "epochs", "seeds"]
    header += FIGURES
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for recipe, runs in recipes.items():
        cells = [str(v) for v in recipe] + [str(len(runs))]
        for figure in FIGURES:
            values = [r[figure] for r in runs if r[figure] is not None]
            cells.append(_mean_sd(values))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _mean_sd(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f}"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model_dirs", nargs="+", type=Path)
    parser.add_argument(
        "--mean", action="store_true", help="one row a recipe, mean ± sd over seeds"
    )
    args = parser.parse_args()
    summaries = [
        held_out_summary(json.loads((d / "config.json").read_text())) for d in args.model_dirs
    ]
    print(mean_table(summaries) if args.mean else held_out_table(summaries, details=True))
