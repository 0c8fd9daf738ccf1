"""Fit the tumour/normal classifier on a model's own split (as train.py splits it)
and put it into that model directory, with every figure that depends on it read
again:

    python benchmarks/detector_network.py --data ../shared/data/{br35h,sartaj,figshare,ms,oasis} \\
        --cache-dir runs/cache --exclude label_exclusions.txt --into pretrained [--dry-run]

train.py fits the classifier with the rest; this is for a model directory made
before the detector's recipe changed, without fitting the plane gate, the
tumour-type network and the autoencoder again, so that their figures stay those
of the networks shipped. The classifier is fitted by the recipe of the model's
arch (train.py's RECIPES; --epochs overrides its epochs), with the model's
seed. Pass the --data and --exclude the model was trained with (its split.json
is checked). Its temperature, inconclusive band and out-of-distribution
thresholds are chosen again on val, as train.py does. --dry-run prints the
figures and leaves the directory as it is; else the directory is replaced
atomically.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detector import BrainTumorDetector
from detector.data import load_slices
from detector.evaluation import classification_metrics, plot_history
from train import (
    RECIPES,
    evaluate_on_test,
    evaluate_types_on_test,
    fit_detector,
    gate_view,
    model_split,
    print_summary,
    save_atomically,
    tumour_donors,
    tune_on_val,
)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", nargs="+", type=Path, required=True, help="the five collections")
    parser.add_argument("--into", type=Path, required=True, help="model directory to refit it in")
    parser.add_argument("--cache-dir", type=Path)
    parser.add_argument("--exclude", type=Path, help="the model's train.py --exclude file")
    parser.add_argument("--epochs", type=int, help="classifier epochs (default: the recipe's)")
    parser.add_argument("--dry-run", action="store_true", help="leave the directory as it is")
    parser.add_argument("--verbose", type=int, default=2)
    args = parser.parse_args(argv)

    old = BrainTumorDetector.from_pretrained(args.into)
    config = old.config
    args.arch, args.seed = config["arch"], config["training"]["seed"]  # fit_detector's
    recipe = RECIPES[args.arch]
    if args.epochs is not None:
        recipe = replace(recipe, epochs=args.epochs)
    cfg = old.preprocess_config
    slices = load_slices(args.data, cfg, cache_dir=args.cache_dir)
    split, excluded = model_split(args.into, slices, config, args.seed, args.exclude)
    keep = np.array([name not in excluded for name in slices.names])
    train_i, val_i, test_i = split["train"], split["val"], split["test"]
    train_i, val_i = train_i[keep[train_i]], val_i[keep[val_i]]

    started = time.time()
    x, y, collections = slices.inputs(cfg), slices.labels, np.array(slices.collections)
    donors = tumour_donors(args, slices, cfg, train_i) if recipe.pasted_tumours else None
    classifier, history, hosts, mimic_hosts = fit_detector(
        args, recipe, x, y, collections, train_i, val_i, donors
    )
    detector = BrainTumorDetector(
        classifier, old.autoencoder, config, assets=old.assets, ood=old.ood,
        plane_gate=old.plane_gate, type_classifier=old.type_classifier,
    )  # fmt: skip
    kept = dict(config["metrics"])  # the gate's and the type network's figures stay
    axial = np.array([p == "axial" for p in slices.planes])
    _, x_gate = gate_view(args, slices, cfg, detector.gate_config)
    tune_on_val(detector, x[val_i], x_gate[val_i], y[val_i], slices.chroma[val_i], axial[val_i])
    config["metrics"] = {**kept, **config["metrics"]}
    p_test = evaluate_on_test(detector, slices, x, x_gate, test_i)
    clean = keep[test_i]
    config["metrics"]["test_excluding_suspects"] = classification_metrics(
        y[test_i][clean], p_test[clean]
    )
    if detector.type_classifier is not None:  # the pointing game reads the classifier's Grad-CAM
        typed_test = test_i[slices.type_indices()[test_i] >= 0]
        # The type network reads its own input size.
        type_slices = load_slices(args.data, detector.type_config, cache_dir=args.cache_dir)
        x_type = type_slices.inputs(detector.type_config)
        evaluate_types_on_test(detector, slices, x, x_type, typed_test, args.data)
    config["training"].update(
        epochs=len(history["loss"]),
        synthetic_tumours=len(hosts),
        lesion_radius=list(recipe.lesion_radius) if len(hosts) else None,
        plaque_mimics=len(mimic_hosts),
        fresh_lesions=recipe.fresh_lesions,
        asymmetry=recipe.asymmetry,
        mix_style=recipe.mix_style,
        augment=recipe.augment,
        detector_refit_seconds=round(time.time() - started),  # not in fit_seconds
    )
    detector.assets.update(plot_history(history))
    print_summary(config, args.into)
    if not args.dry_run:
        save_atomically(detector, args.into)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
