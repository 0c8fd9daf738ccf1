"""Random-weights detectors in the real format: for tests that need a model, not a good one."""

from __future__ import annotations

from detector import BrainTumorDetector
from detector.models import build_autoencoder, build_classifier
from preprocessing import PreprocessConfig


def tiny_detector(
    image_size: int = 96, channels: int = 1, arch: str = "default", ood=None, **config
) -> BrainTumorDetector:
    """A detector with untrained networks; ``config`` overrides the defaults below."""
    cfg = PreprocessConfig(image_size=image_size, channels=channels)
    defaults = {
        "labels": {"0": "normal", "1": "tumor"},
        "preprocessing": cfg.to_dict(),
        "decision_threshold": 0.5,
        "inconclusive_band": [0.4, 0.6],
        "temperature": 1.0,
        # Random weights reconstruct nothing; a threshold no score reaches keeps
        # real slices "in distribution", so their probabilities are shown.
        "anomaly_ratio_threshold": 1e6,
        "metrics": {},
    }
    return BrainTumorDetector(
        build_classifier(arch, image_size, channels),
        build_autoencoder(image_size, channels),
        {**defaults, **config},
        ood=ood,
    )
