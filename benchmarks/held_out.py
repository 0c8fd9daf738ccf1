"""Held-out-collection table: how models fare on a collection they never saw.

Each model directory is one `train.py --hold-out COLLECTION` run; its test
split is that collection whole. Prints a Markdown table, one row a run:

    for c in br35h sartaj figshare ms oasis; do
      python train.py --data ../shared/data/{br35h,sartaj,figshare,ms,oasis} --hold-out $c \\
          --out runs/held-out/$c --cache-dir runs/cache --exclude label_exclusions.txt
    done
    python benchmarks/held_out.py runs/held-out/*
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detector.card import held_out_table
from detector.evaluation import held_out_summary

if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    configs = [json.loads((Path(d) / "config.json").read_text()) for d in sys.argv[1:]]
    print(held_out_table([held_out_summary(c) for c in configs], details=True))
