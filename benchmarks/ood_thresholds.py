"""Choose an existing model's out-of-distribution thresholds again, on its own val
split by train.py's rule, after a check's score changed, and read the figures
that depend on them again (the share of val and test slices flagged, the test
answers):

    python benchmarks/ood_thresholds.py --data ../shared/data/{br35h,sartaj,figshare,ms,oasis} \\
        --cache-dir runs/cache --exclude label_exclusions.txt --into pretrained [--dry-run]

(a --hold-out run: add its --seed and --hold-out.)

Then `benchmarks/plane_gate.py ... --into pretrained --measure-only` reads the
gate's tables again (what the older checks still catch, the whole detector's
targets). Like it, this refuses a --data, --seed or --exclude other than the
model's (its split.json), and replaces the directory atomically.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detector import BrainTumorDetector
from detector.data import load_slices
from train import (
    choose_ood_thresholds,
    fmt_percent,
    gate_view,
    measure_again,
    model_split,
    save_atomically,
)

THRESHOLDS = ("anomaly_ratio_threshold", "layout_threshold")  # what choose_ood_thresholds sets


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data", nargs="+", type=Path, required=True, help="the model's collections"
    )
    parser.add_argument("--into", type=Path, required=True, help="model directory")
    parser.add_argument("--cache-dir", type=Path)
    parser.add_argument("--exclude", type=Path, help="the model's train.py --exclude file")
    parser.add_argument("--seed", type=int, default=0, help="train.py's --seed: the split")
    parser.add_argument("--hold-out", metavar="COLLECTION", help="train.py's --hold-out: the split")
    parser.add_argument(
        "--dry-run", action="store_true", help="print the figures, leave the directory as it is"
    )
    args = parser.parse_args(argv)

    detector = BrainTumorDetector.from_pretrained(args.into)
    config = detector.config
    slices = load_slices(args.data, detector.preprocess_config, cache_dir=args.cache_dir)
    _, x_gate = gate_view(args, slices, detector.preprocess_config, detector.gate_config)
    split, excluded = model_split(args.into, slices, config, args.seed, args.exclude, args.hold_out)

    before = {key: config.get(key) for key in THRESHOLDS}
    rates_before = {
        key: config["metrics"].get(key) for key in ("ood_rate_val_axial", "ood_rate_test_axial")
    }
    val = np.array([i for i in split["val"] if slices.names[i] not in excluded], int)
    _, scores = detector.predict_arrays(
        slices.inputs(detector.preprocess_config)[val], slices.chroma[val], x_gate[val]
    )
    choose_ood_thresholds(config, scores)
    measure_again(detector, slices, split, excluded, x_gate)
    for key in THRESHOLDS:
        print(f"{key}: {before[key]} -> {config[key]:.4g}")
    for key, was in rates_before.items():
        print(f"{key}: {fmt_percent(was)} -> {fmt_percent(config['metrics'][key])}")
    if not args.dry_run:
        save_atomically(detector, args.into)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
