"""Tumour type by patient: figshare's own 5-fold cross-validation, and one collection's
tumours typed by a network trained on the other's.

    python benchmarks/tumor_type.py --data ../shared/data/{figshare,sartaj} --cache-dir runs/cache \\
        --out runs/type/results.json

Uses train.py's default recipe for the type network (input size, epochs,
augmentation), so the figures are those of the network the bundled model ships.

- cv: for each of figshare's five `cv_fold`s (patients.csv; no patient spans
  two), train on the other four and test on it, as the literature does
  (Cheng et al. 2015: 91.3 % mean accuracy). The epoch is chosen on an eighth
  of the training patients, never on the tested fold.
- sartaj <- figshare: train on figshare, test on sartaj's tumours, and the
  reverse (figshare <- sartaj). Most figshare slices have copies in sartaj, so sartaj's side is
  only its tumours grouped with no figshare slice (data.Slices.clusters).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detector.card import type_cv_table
from detector.catalogue import TUMOR_TYPES
from detector.data import load_slices
from detector.evaluation import mirrored_probabilities, type_metrics
from detector.models import members_of
from detector.training import AUGMENTATIONS, ENSEMBLES, check_ensemble, fit_type_classifier
from preprocessing import PreprocessConfig
from train import RECIPES

# Patient-level 5-fold accuracy on figshare as published.
PUBLISHED = {
    "Cheng et al. 2015 (tumour region augmentation + BoW)": 0.913,
}


def main(argv=None) -> int:
    args = parse_args(argv)
    recipe = RECIPES["default"]
    try:  # now, not after the decoding
        check_ensemble(args.ensemble, args.members, args.epochs or recipe.type_epochs)
    except ValueError as error:
        raise SystemExit(f"--epochs, --members, --ensemble: {error}") from None
    size = args.image_size or recipe.type_image_size
    cfg = PreprocessConfig(image_size=size, channels=recipe.channels, intensity=recipe.intensity)
    slices = load_slices(args.data, cfg, cache_dir=args.cache_dir)
    x, types = slices.inputs(cfg), slices.type_indices()
    figshare = np.flatnonzero(slices.in_collection("figshare"))
    clusters = slices.clusters()  # groups of near-duplicates and patients, found once
    augment = args.augment or recipe.type_augment
    fit = lambda train, val: fit_type_classifier(
        (x[train], types[train]), (x[val], types[val]), classes=len(TUMOR_TYPES),
        epochs=args.epochs or recipe.type_epochs, batch_size=recipe.batch_size, seed=args.seed,
        augment=augment, members=args.members, ensemble=args.ensemble, verbose=0,
    )  # fmt: skip
    results = {"recipe": {"image_size": cfg.image_size, "epochs": args.epochs or recipe.type_epochs,
                          "augment": augment, "seed": args.seed, "members": args.members,
                          "ensemble": args.ensemble, "with_sartaj": args.with_sartaj},
               "published": PUBLISHED}  # fmt: skip

    folds = cv_folds(slices, figshare, args.data)
    results["cv"] = []
    # --with-sartaj: sartaj's tumours that are not copies of figshare slices also train
    # (the bundled network learns from both); never tested on, so each fold stays figshare's.
    extra = sartaj_tumours_apart_from(slices, clusters, figshare) if args.with_sartaj else figshare[:0]
    for fold in args.folds:
        test, rest = figshare[folds == fold], figshare[folds != fold]
        train, val = split_patients(slices, clusters, np.concatenate([rest, extra]), args.seed)
        network, histories = fit(train, val)
        each = [mirrored_probabilities(member, x[test]) for member in members_of(network)]
        metrics = type_metrics(types[test], np.mean(each, axis=0), list(TUMOR_TYPES))
        # The kept epoch's val accuracy: what a recipe may be chosen on (never the fold).
        val_accuracy = float(np.mean(
            [h["val_accuracy"][int(np.argmin(h["val_loss"]))] for h in histories]
        ))  # fmt: skip
        member_accuracy = [float(np.mean(p.argmax(axis=1) == types[test])) for p in each]
        # ... and the average's, on the same val patients: what an ensemble is chosen on.
        typed = mirrored_probabilities(network, x[val]).argmax(axis=1)
        average_val_accuracy = float(np.mean(typed == types[val]))
        results["cv"].append({"fold": fold, "train_slices": len(train), "val_accuracy": val_accuracy,
                              "average_val_accuracy": average_val_accuracy,
                              "member_accuracy": member_accuracy, **metrics})  # fmt: skip
        print(f"fold {fold}: accuracy {metrics['accuracy']['value']:.3f}, "
              f"macro-F1 {metrics['macro_f1']['value']:.3f} (val accuracy {average_val_accuracy:.3f}; "
              f"each network's kept epoch {val_accuracy:.3f})", flush=True)  # fmt: skip
    results["cv_summary"] = summarise(results["cv"])

    if args.cross and slices.in_collection("sartaj").any():
        results["cross_collection"] = {}
        sartaj_only = sartaj_tumours_apart_from(slices, clusters, figshare)
        for train_side, test_side, name in ((figshare, sartaj_only, "sartaj <- figshare"),
                                            (sartaj_only, figshare, "figshare <- sartaj")):  # fmt: skip
            train, val = split_patients(slices, clusters, train_side, args.seed)
            metrics = results["cross_collection"][name] = type_metrics(
                types[test_side], mirrored_probabilities(fit(train, val)[0], x[test_side]),
                list(TUMOR_TYPES),
            )  # fmt: skip
            print(
                f"{name}: accuracy {metrics['accuracy']['value']:.3f} on {len(test_side)}",
                flush=True,
            )

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(type_cv_table(results))
    return 0


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data", nargs="+", type=Path, required=True, help="figshare (and sartaj) folders"
    )
    parser.add_argument(
        "--out", type=Path, required=True, help="JSON of every figure, for train.py --type-results"
    )
    parser.add_argument("--cache-dir", type=Path)
    parser.add_argument("--folds", nargs="+", type=int, default=[1, 2, 3, 4, 5])
    parser.add_argument("--epochs", type=int, help="default: train.py's recipe")
    parser.add_argument("--augment", choices=AUGMENTATIONS, help="default: train.py's recipe")
    parser.add_argument("--image-size", type=int, help="input side; default: train.py's recipe")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--with-sartaj", action="store_true",
                        help="5-fold: also train on sartaj's tumours that are not copies of figshare's")  # fmt: skip
    parser.add_argument("--members", type=int, default=RECIPES["default"].type_members,
                        help="networks per fold (--ensemble says how they are made), probabilities averaged; "
                             "default: train.py's recipe")  # fmt: skip
    parser.add_argument("--ensemble", choices=ENSEMBLES, default=RECIPES["default"].type_ensemble,
                        help="how the members are made (detector.training.ENSEMBLES); "
                             "default: train.py's recipe")  # fmt: skip
    parser.add_argument(
        "--no-cross", dest="cross", action="store_false", help="only the 5-fold figures"
    )
    return parser.parse_args(argv)  # fmt: skip


def cv_folds(slices, figshare: np.ndarray, roots) -> np.ndarray:
    """figshare's own cv_fold (patients.csv) of each slice in ``figshare``."""
    root = next(Path(r) for r in roots if Path(r).name.lower() == "figshare")
    with (root / "patients.csv").open(newline="") as f:
        fold = {f"figshare/{row['path']}": int(row["cv_fold"]) for row in csv.DictReader(f)}
    return np.array([fold[slices.names[i]] for i in figshare])


def split_patients(
    slices, clusters: np.ndarray, index: np.ndarray, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """train, val: an eighth of the groups (patients, near-duplicates) for val, by type."""
    from detector.data import split_by_cluster

    part = split_by_cluster(slices.type_indices()[index], clusters[index], seed, with_test=False)
    return index[part["train"]], index[part["val"]]


def sartaj_tumours_apart_from(slices, clusters: np.ndarray, figshare: np.ndarray) -> np.ndarray:
    """sartaj's typed tumour slices grouped with no figshare slice (not copies of one)."""
    sartaj = np.flatnonzero(slices.in_collection("sartaj") & (slices.type_indices() >= 0))
    return sartaj[~np.isin(clusters[sartaj], clusters[figshare])]


def summarise(folds: list[dict]) -> dict:
    """Mean and standard deviation over folds of accuracy, macro-F1 and each type's recall."""
    columns = {
        "accuracy": lambda m: m["accuracy"]["value"],
        "macro_f1": lambda m: m["macro_f1"]["value"],
    }
    columns.update(
        {f"recall {t}": (lambda m, t=t: m["per_type"][t]["recall"]["value"]) for t in TUMOR_TYPES}
    )
    return {
        name: {"mean": round(float(np.mean([get(m) for m in folds])), 4),
               "sd": round(float(np.std([get(m) for m in folds], ddof=1)), 4) if len(folds) > 1 else None}
        for name, get in columns.items()
    }  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
