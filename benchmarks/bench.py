"""Speed, memory and accuracy of trained models, side by side, as a Markdown table.

    python benchmarks/bench.py pretrained runs/report --data ../shared/data/br35h

Each model is measured in a fresh subprocess so that its peak RSS is its own.
Accuracy, AUROC and training time are read from the model's config.json,
which train.py wrote after reading the leak-free test split once (the
integration test recomputes them from the raw files).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def measure(model_dir: Path, data: Path, repeats: int, batch: int) -> dict:
    """Run inside the subprocess: time the public API on real files."""
    import numpy as np

    from detector import BrainTumorDetector
    from preprocessing import preprocess

    every = sorted(data.glob("*/*"))
    files = every[:: max(1, len(every) // repeats)][:repeats]
    detector = BrainTumorDetector.from_pretrained(model_dir)
    detector.predict(files[0])  # warm-up: traces the graph once

    single = []
    for path in files[:repeats]:
        started = time.perf_counter()
        detector.predict(path)
        single.append((time.perf_counter() - started) * 1000)

    batch_files = (files * (batch // len(files) + 1))[:batch]
    started = time.perf_counter()
    detector.predict_batch(batch_files)
    throughput = batch / (time.perf_counter() - started)

    # The report's way: its CNN alone through model.predict, one image a call.
    x = preprocess(files[0], detector.preprocess_config).x
    detector.classifier.predict(x[None], verbose=0)
    keras_predict = []
    for _ in range(min(repeats, 30)):
        started = time.perf_counter()
        detector.classifier.predict(x[None], verbose=0)
        keras_predict.append((time.perf_counter() - started) * 1000)

    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # before a second copy
    gated = detector.plane_gate is not None
    gate_ms = part_cost(detector, model_dir, files, "plane_gate") if gated else None
    # The type network runs only for a slice labelled tumour: timed on those.
    tumours = [path for path in files if detector.predict(path).label == "tumor"]
    type_ms = (
        part_cost(detector, model_dir, tumours, "type_classifier")
        if detector.type_classifier is not None and tumours
        else None
    )

    config = detector.config
    test = config["metrics"]["test"]
    return {
        "model": model_dir.name,
        "arch": config["arch"],
        "split": config["split"]["method"],
        "accuracy": test["accuracy"]["value"],
        "auroc": test["auroc"]["value"],
        "train_s": config["training"]["fit_seconds"],
        "p50_ms": float(np.percentile(single, 50)),
        "p95_ms": float(np.percentile(single, 95)),
        "cnn_model_predict_p50_ms": float(np.percentile(keras_predict, 50)),
        "batch_per_s": throughput,
        "gate_ms": gate_ms,
        "type_ms": type_ms,
        "peak_rss_mb": peak_rss_mb,
        "size_mb": sum(p.stat().st_size for p in model_dir.glob("*.keras")) / 2**20,
    }


def part_cost(detector, model_dir: Path, files: list[Path], part: str) -> tuple[float, float]:
    """predict p50 (ms) with a network (``part``: plane_gate, type_classifier) and
    without it: ``detector`` (warm) and a second copy of it without that network,
    called in turn on the same files, so that both see the same machine load."""
    import numpy as np

    from detector import BrainTumorDetector

    without = BrainTumorDetector.from_pretrained(model_dir)
    setattr(without, part, None)
    without.predict(files[0])  # warm-up
    detectors = {"with": detector, "without": without}
    times = {name: [] for name in detectors}
    for path in files:
        for name, d in detectors.items():
            started = time.perf_counter()
            d.predict(path)
            times[name].append((time.perf_counter() - started) * 1000)
    return float(np.median(times["with"])), float(np.median(times["without"]))


def table(rows: list[dict]) -> str:
    header = (
        "| model | arch | split | test accuracy | test AUROC | training (s) | predict p50 / p95 (ms) "
        "| plane gate: predict p50 with / without (ms) "
        "| type network: predict p50 with / without, slices labelled tumour (ms) | report's way: CNN model.predict p50 (ms) "
        "| predict_batch (slices/s) | peak RSS (MB) | weights (MB) |"
    )
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for r in rows:
        gate = "no gate" if r["gate_ms"] is None else "{:.1f} / {:.1f}".format(*r["gate_ms"])
        types = (
            "no type network" if r["type_ms"] is None else "{:.1f} / {:.1f}".format(*r["type_ms"])
        )
        lines.append(
            f"| {r['model']} | {r['arch']} | {r['split']} | {r['accuracy']:.3f} | {r['auroc']:.3f} "
            f"| {r['train_s']} | {r['p50_ms']:.1f} / {r['p95_ms']:.1f} | {gate} | {types} | {r['cnn_model_predict_p50_ms']:.1f} "
            f"| {r['batch_per_s']:.0f} | {r['peak_rss_mb']:.0f} | {r['size_mb']:.1f} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("models", nargs="+", type=Path, help="model directories")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared/data/br35h")
    parser.add_argument("--repeats", type=int, default=100, help="single-slice calls to time")
    parser.add_argument("--batch", type=int, default=256, help="slices in the throughput batch")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # subprocess mode
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.models[0], args.data, args.repeats, args.batch)))
        return 0
    rows = []
    for model in args.models:
        command = [sys.executable, __file__, str(model), "--one", "--data", str(args.data),
                   "--repeats", str(args.repeats), "--batch", str(args.batch)]  # fmt: skip
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(output.strip().splitlines()[-1]))
    print(table(rows))
    print(
        f"\n{os.cpu_count()} CPU cores; single-slice times include decode + crop + CNN + autoencoder."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
