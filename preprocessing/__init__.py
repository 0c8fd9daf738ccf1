"""Pure image code (no TensorFlow): decode -> crop the brain -> network input."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .crop import (
    PreprocessConfig,
    brain_box,
    crop_brain,
    crop_window,
    resize_square,
    scale_intensity,
    square_to_crop,
    to_input,
)
from .decode import MAX_FILE_BYTES, decode, decode_with_colour
from .errors import InvalidImageError
from .pixels import MAX_PIXELS, scale_to_uint8

__all__ = [
    "MAX_FILE_BYTES",
    "MAX_PIXELS",
    "InvalidImageError",
    "PreprocessConfig",
    "Preprocessed",
    "brain_box",
    "crop_brain",
    "crop_window",
    "decode",
    "decode_with_colour",
    "preprocess",
    "resize_square",
    "scale_intensity",
    "scale_to_uint8",
    "square_to_crop",
    "to_input",
]


class Preprocessed(NamedTuple):
    cropped: np.ndarray  # uint8 grey brain crop at its own resolution
    x: np.ndarray  # float32 (S, S, C) network input in [0, 1]
    chroma: float  # how colourful the picture was (decode_with_colour); 0 for grey
    plane: str = ""  # what a DICOM/NIfTI header says the slice is (Decoded.plane); "" none


def preprocess(
    source, cfg: PreprocessConfig = PreprocessConfig(), *, slice_index: int | None = None
) -> Preprocessed:
    """Decode, crop and resize one input."""
    grey, chroma, plane = decode_with_colour(source, slice_index=slice_index)
    cropped = crop_brain(grey, cfg)
    return Preprocessed(cropped, to_input(cropped, cfg), chroma, plane)
