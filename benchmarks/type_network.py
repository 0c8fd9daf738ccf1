"""Fit the tumour-type network on a model's own split (as train.py splits it) and
put it into that model directory, with every type figure read again:

    python benchmarks/type_network.py --data ../shared/data/{br35h,sartaj,figshare,ms,oasis} \\
        --cache-dir runs/cache --exclude label_exclusions.txt --into pretrained \\
        [--type-results runs/type/results.json]

train.py fits the type network with the rest; this is for a model directory
made before the type recipe changed (two networks averaged), without fitting
the detector, the autoencoder and the plane gate again, so that their figures
stay those of the networks shipped. Pass the --seed and --exclude the model was
trained with. --type-results puts benchmarks/tumor_type.py's 5-fold and
cross-collection figures on the card; --dry-run prints the figures and leaves
the directory as it is. The directory is replaced atomically.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detector import BrainTumorDetector
from detector.catalogue import TUMOR_TYPES
from detector.data import load_slices
from detector.training import ENSEMBLES, check_ensemble
from train import (
    RECIPES,
    evaluate_types_on_test,
    fit_types,
    model_split,
    print_summary,
    save_atomically,
)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", nargs="+", type=Path, required=True, help="the five collections")
    parser.add_argument("--into", type=Path, required=True, help="model directory to refit it in")
    parser.add_argument("--cache-dir", type=Path)
    parser.add_argument("--exclude", type=Path, help="the model's train.py --exclude file")
    parser.add_argument(
        "--seed", type=int, default=0, help="train.py's --seed: the split, the networks'"
    )
    parser.add_argument(
        "--type-members", type=int, help="networks averaged (default: the recipe's)"
    )
    parser.add_argument("--type-ensemble", choices=ENSEMBLES,
                        help="how they are made (default: the recipe's)")  # fmt: skip
    parser.add_argument("--type-results", type=Path, metavar="JSON",
                        help="benchmarks/tumor_type.py's figures, for the card")  # fmt: skip
    parser.add_argument("--dry-run", action="store_true", help="leave the directory as it is")
    parser.add_argument("--verbose", type=int, default=2)
    args = parser.parse_args(argv)

    detector = BrainTumorDetector.from_pretrained(args.into)
    config = detector.config
    recipe = RECIPES[config["arch"]]
    recipe = replace(recipe, type_members=args.type_members or recipe.type_members,
                     type_ensemble=args.type_ensemble or recipe.type_ensemble)  # fmt: skip
    try:  # now, not after the decoding
        check_ensemble(recipe.type_ensemble, recipe.type_members, recipe.type_epochs)
    except ValueError as error:
        raise SystemExit(f"--type-members, --type-ensemble: {error}") from None
    cfg = detector.preprocess_config
    slices = load_slices(args.data, cfg, cache_dir=args.cache_dir)
    split, excluded = model_split(args.into, slices, config, args.seed, args.exclude)
    keep = np.array([name not in excluded for name in slices.names])
    train_i, val_i = (split[part][keep[split[part]]] for part in ("train", "val"))

    started = time.time()
    network, x_type, type_val = fit_types(args, recipe, cfg, slices, train_i, val_i)
    if network is None:
        raise SystemExit("The data has no tumours of a known type to learn from.")
    config.update(tumor_types=list(TUMOR_TYPES), type_image_size=x_type.shape[1])
    detector.type_classifier = network
    config["metrics"]["type_val"] = type_val
    config["training"].update(
        type_augment=recipe.type_augment, type_members=recipe.type_members,
        type_ensemble=recipe.type_ensemble,
        type_refit_seconds=round(time.time() - started),  # not in fit_seconds, of the first run
    )  # fmt: skip
    test_i = split["test"]
    typed_test = test_i[slices.type_indices()[test_i] >= 0]
    evaluate_types_on_test(detector, slices, slices.inputs(cfg), x_type, typed_test, args.data)
    if args.type_results:
        config["type_results"] = json.loads(args.type_results.read_text())
    print_summary(config, args.into)
    if not args.dry_run:
        save_atomically(detector, args.into)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
