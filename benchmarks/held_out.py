"""Held-out-collection table: how models fare on a collection they never saw.

Each model directory is one `train.py --hold-out COLLECTION` run; its test
split is that collection whole. Prints a Markdown table, one row a run, or
with --mean one row a recipe (runs that differ only in seed), mean ± standard
deviation over its seeds:

    for c in br35h sartaj figshare ms oasis; do
      python train.py --data ../shared/data/{br35h,sartaj,figshare,ms,oasis} --hold-out $c \\
          --out runs/held-out/$c --ae-epochs 2 --type-epochs 0 --cache-dir runs/cache \\
          --exclude label_exclusions.txt
    done
    python benchmarks/held_out.py runs/held-out/{br35h,sartaj,figshare,ms,oasis}
    python benchmarks/held_out.py runs/held-out/{br35h,sartaj,figshare,ms,oasis} --onto pretrained

--onto puts the runs' figures on a model directory's card (config.json's
"held_out" and README.md), as train.py --held-out-runs does, without refitting
the model: its networks are left untouched.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detector.card import HELD_OUT_DETAILS, held_out_table
from detector.evaluation import held_out_summary

RECIPE = ("collection", "image_size", "intensity", "letterbox", "augment", "planes", "balance",
          "synthetic_tumours", "lesion_radius", "plaque_mimics", "lesions_painted", "pasted_tumours",
          "asymmetry", "mix_style", "epochs")  # fmt: skip
FIGURES = ("auroc", "sensitivity", "specificity", "sartaj axial normals: specificity",
           "sagittal/coronal normals: specificity", "axial by the plane gate: auroc",
           "axial by the plane gate: sensitivity", "axial by the plane gate: specificity",
           "answered", "answers wrong")  # fmt: skip


def mean_table(summaries: list[dict]) -> str:
    """One row per recipe: each figure as mean ± sd over the seeds."""
    recipes: dict[tuple, list[dict]] = {}
    for summary in summaries:
        # .get: runs made before a recipe field was recorded (lesion_radius) have none
        recipes.setdefault(tuple(summary.get(k) for k in RECIPE), []).append(summary)
    header = ["held out", *(HELD_OUT_DETAILS[k] for k in RECIPE[1:]), "seeds", *FIGURES]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for recipe, runs in recipes.items():
        cells = ["-" if v is None else str(v) for v in recipe] + [str(len(runs))]
        for figure in FIGURES:
            values = [r[figure] for r in runs if r[figure] is not None]
            cells.append(_mean_sd(values))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def show_on_card(model_dir: Path, summaries: list[dict]) -> None:
    """Replace a model directory's held-out figures in config.json and its card."""
    from detector.card import render_model_card
    from detector.detector import CONFIG_FILE, read_assets

    config = json.loads((model_dir / CONFIG_FILE).read_text())
    config["held_out"] = summaries
    card = render_model_card(config, read_assets(model_dir))  # before writing anything
    for name, text in ((CONFIG_FILE, json.dumps(config, indent=2) + "\n"), ("README.md", card)):
        staging = model_dir / f".{name}.tmp"
        staging.write_text(text, encoding="utf-8")
        staging.replace(model_dir / name)  # atomic: never half a file


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
    parser.add_argument(
        "--onto", type=Path, metavar="MODEL_DIR", help="also show these runs on this model's card"
    )
    args = parser.parse_args()
    not_models = [
        str(d) for d in [*args.model_dirs, args.onto] if d and not (d / "config.json").is_file()
    ]
    if not_models:  # e.g. a shell glob that caught a run's log file
        parser.error(f"not model directories (no config.json): {', '.join(not_models)}")
    summaries = [
        held_out_summary(json.loads((d / "config.json").read_text())) for d in args.model_dirs
    ]
    print(mean_table(summaries) if args.mean else held_out_table(summaries, details=True))
    if args.onto:
        show_on_card(args.onto, summaries)
        print(f"\nWritten to {args.onto / 'config.json'} and {args.onto / 'README.md'}")
