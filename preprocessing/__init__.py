"""Pure image code (no TensorFlow): decode -> crop the brain -> network input."""

from __future__ import annotations

import numpy as np

from .crop import PreprocessConfig, crop_brain, to_input
from .decode import MAX_FILE_BYTES, MAX_PIXELS, decode, scale_to_uint8
from .errors import InvalidImageError

__all__ = [
    "InvalidImageError",
    "MAX_FILE_BYTES",
    "MAX_PIXELS",
    "PreprocessConfig",
    "crop_brain",
    "decode",
    "preprocess",
    "scale_to_uint8",
    "to_input",
]


def preprocess(
    source, cfg: PreprocessConfig = PreprocessConfig(), *, slice_index: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Return (cropped uint8 grey slice, float32 network input) for one input."""
    cropped = crop_brain(decode(source, slice_index=slice_index), cfg)
    return cropped, to_input(cropped, cfg)
