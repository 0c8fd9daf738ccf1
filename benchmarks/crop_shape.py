"""The brain crop's shape (height over width of its box) per collection and known plane.

The detector and the plane gate squash each crop to a square, so the gate never
sees that shape; this measures what it would have to go on (README, Plane gate):

    python benchmarks/crop_shape.py --data ../shared/data/{br35h,sartaj,figshare,ms,oasis} \\
        --cache-dir runs/cache --per-group 150
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detector.data import load_slices, slice_files
from detector.plane import known_planes
from preprocessing import brain_box
from preprocessing.decode import decode_with_colour


def crop_shapes(roots, cache_dir=None, per_group: int = 150, seed: int = 0) -> dict:
    """{(collection, plane): (slices of it, height/width of up to per_group crops drawn)}."""
    slices = load_slices(roots, cache_dir=cache_dir)
    groups = defaultdict(list)
    for i, key in enumerate(zip(slices.collections, known_planes(slices))):
        if key[1]:  # a known plane
            groups[key].append(i)
    rng = np.random.default_rng(seed)
    shapes = {}
    for key in sorted(groups):
        drawn = rng.choice(groups[key], min(per_group, len(groups[key])), replace=False)
        ratios = []
        for path in slice_files([slices.names[i] for i in drawn], roots):
            _, _, width, height = brain_box(decode_with_colour(path.read_bytes())[0])
            ratios.append(height / width)
        shapes[key] = (len(groups[key]), np.array(ratios))
    return shapes


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", nargs="+", type=Path, required=True)
    parser.add_argument("--cache-dir", type=Path)
    parser.add_argument("--per-group", type=int, default=150, help="crops measured per row")
    args = parser.parse_args(argv)
    print("| collection | plane | slices | height / width: 10th percentile | median | 90th |")
    print("|---|---|---|---|---|---|")
    for (collection, plane), (n, ratios) in crop_shapes(args.data, args.cache_dir, args.per_group).items():
        low, mid, high = np.percentile(ratios, [10, 50, 90])
        print(f"| {collection} | {plane} | {n} | {low:.2f} | {mid:.2f} | {high:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
