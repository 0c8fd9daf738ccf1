"""Fit a plane gate on the union's split (as train.py splits it) and put it into
an existing model directory, or measure the one there again (new hand labels):

    python benchmarks/plane_gate.py --data ../shared/data/{br35h,sartaj,figshare,ms,oasis} \\
        --cache-dir runs/cache --exclude label_exclusions.txt --into pretrained [--measure-only]

train.py fits the gate with the rest; this is for a model directory made
before the gate, or after its labels or recipe changed. To compare gate
recipes, fit one several times on the model's own split and keep nothing:

    python benchmarks/plane_gate.py ... --into pretrained --gate-seed S --dry-run \
        [--extras ...] [--letterbox]

and on a collection the gate never saw (train.py --hold-out's split; only the
gate's own figures, the held-out collection whole as its test):

    python benchmarks/plane_gate.py ... --into pretrained --hold-out sartaj --gate-seed S --dry-run

The figures that depend on the gate (the share of val and test slices flagged, the test
answers, the slices it passes) are read again with the new one; pass the
--exclude file the model was trained with. The directory is replaced
atomically, as train.py writes it.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detector import BrainTumorDetector
from detector.data import load_slices
from detector.plane import (
    GATE_AUGMENT,
    MADE_EXTRAS,
    fit_plane_gate,
    format_old_checks,
    format_report,
    install,
    record,
    sartaj_folder,
)
from detector.training import AUGMENTATIONS
from train import (
    check_model_split,
    fmt_percent,
    gate_view,
    make_split,
    measure_again,
    read_exclusions,
    save_atomically,
)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", nargs="+", type=Path, required=True, help="the five collections")
    parser.add_argument(
        "--into", type=Path, required=True, help="model directory to add the gate to"
    )
    parser.add_argument("--cache-dir", type=Path)
    parser.add_argument("--exclude", type=Path, help="the model's train.py --exclude file")
    parser.add_argument("--seed", type=int, default=0, help="train.py's --seed: the split")
    parser.add_argument("--gate-seed", type=int, help="the gate's own seed (default: --seed)")
    parser.add_argument(
        "--dry-run", action="store_true", help="print the figures, leave the directory as it is"
    )
    parser.add_argument(
        "--hold-out", metavar="COLLECTION",
        help="fit on train.py --hold-out's split and test on that collection whole (--dry-run)",
    )  # fmt: skip
    parser.add_argument("--epochs", type=int, default=16)
    parser.add_argument("--augment", choices=AUGMENTATIONS, default=GATE_AUGMENT, help="the gate's")
    parser.add_argument(
        "--extras", nargs="+", choices=MADE_EXTRAS, default=[],
        help="made examples to learn from as well (tried, not adopted: docs/experiments.md)",
    )  # fmt: skip
    parser.add_argument("--members", type=int, default=1, help="gates fitted and averaged")
    parser.add_argument(
        "--letterbox", action=argparse.BooleanOptionalAction,
        help="the new gate reads the crop letterboxed (default: as the model's gate reads it)",
    )  # fmt: skip
    parser.add_argument(
        "--measure-only",
        action="store_true",
        help="keep the model's gate: choose its threshold and measure it again",
    )
    args = parser.parse_args(argv)
    if args.hold_out and not (args.dry_run and not args.measure_only):
        parser.error("--hold-out fits a new gate on another split: add --dry-run")
    if args.measure_only and args.letterbox is not None:
        parser.error("--measure-only keeps the model's gate, which reads the crop as it learnt to")
    detector = BrainTumorDetector.from_pretrained(args.into)
    cfg = detector.preprocess_config  # as train.py fits the gate: on the detector's inputs
    slices = load_slices(args.data, cfg, cache_dir=args.cache_dir)
    split, _ = make_split(slices, slices.clusters(), args.seed, args.hold_out)  # train.py's
    excluded = read_exclusions(args.exclude, slices.names)
    if not args.hold_out:  # its figures go into the model's config: on the model's own split
        check_model_split(args.into, slices, split, excluded)
    gate = detector.plane_gate if args.measure_only else None
    gate_seed = args.seed if args.gate_seed is None else args.gate_seed
    gate_cfg = detector.gate_config
    if args.letterbox is not None:
        gate_cfg = replace(gate_cfg, letterbox=args.letterbox)
    gate_slices, x_gate = gate_view(args, slices, cfg, gate_cfg)
    fitted = fit_plane_gate(
        gate_slices, split, gate_cfg, sartaj_folder(args.data), gate_seed, epochs=args.epochs,
        gate=gate, augment=args.augment, made_extras=tuple(args.extras), members=args.members,
    )
    if args.hold_out:  # the detector's figures are of its own split, not this one
        print(format_report(fitted.metrics))
        return 0
    install(detector, fitted)
    if gate is not None:  # what the kept gate was trained on: unknown here, so as recorded
        fitted.metrics["train"] = detector.config["metrics"]["plane_gate"]["train"]
    record(detector, fitted, slices.inputs(cfg))
    measure_again(detector, slices, split, excluded, x_gate)
    print(format_report(fitted.metrics))
    print(format_old_checks(fitted.metrics["old_checks"]))
    m = detector.config["metrics"]
    print(f"The whole detector flags {fmt_percent(m.get('ood_rate_val_axial'))} of the axial "
          f"val slices, {fmt_percent(m.get('ood_rate_test_axial'))} of the axial test slices")  # fmt: skip
    if not args.dry_run:
        save_atomically(detector, args.into)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
