"""The model package: networks, BrainTumorDetector, evaluation."""

from preprocessing import InvalidImageError

from .detector import BrainTumorDetector, Prediction

__all__ = ["BrainTumorDetector", "InvalidImageError", "Prediction"]
