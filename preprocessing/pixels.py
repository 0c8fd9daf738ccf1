"""The low level shared by both decoders (decode, medical): Decoded, size guards, arrays to grey."""

from __future__ import annotations

from typing import NamedTuple

import cv2
import numpy as np

from .errors import InvalidImageError

# A 20,000 x 20,000 "pixel bomb" would need 400 MB as grey; MRI slices are a
# few hundred pixels a side, so 36 megapixels leaves a wide margin.
MAX_PIXELS = 6000 * 6000
MIN_SIDE = 32


class Decoded(NamedTuple):
    grey: np.ndarray  # 2-D uint8
    chroma: float  # mean spread between the colour channels, 0..255; 0 for grey sources
    # What the file's header says the slice is: "axial", "sagittal", "coronal",
    # "not MRI" (a DICOM of another modality), or "" when there is no header.
    plane: str = ""


def too_many_pixels_message(size) -> str:
    dims = f" ({size[0]} x {size[1]})" if size else ""
    return (
        f"The image is too large{dims}; the limit is {MAX_PIXELS / 1e6:.0f} megapixels. "
        "Downscale it or export the single slice."
    )


def check_size(width: int, height: int) -> None:
    """Refuse bombs from the header alone, before any pixel is decoded."""
    if width * height > MAX_PIXELS:
        raise InvalidImageError(too_many_pixels_message((width, height)))
    if min(width, height) < MIN_SIDE:
        raise InvalidImageError(
            f"The image is only {width} x {height} pixels; at least {MIN_SIDE} x {MIN_SIDE} "
            "is needed to find the brain."
        )


def array_to_grey(array: np.ndarray) -> Decoded:
    """Any 2-D or H x W x {1,2,3,4} (grey/colour, maybe with alpha) array to uint8 grey."""
    a = np.asarray(array)
    if a.dtype.kind not in "buif":  # bool, unsigned, signed, float: not complex/object
        raise InvalidImageError(f"Cannot read an image from an array of type {a.dtype}.")
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] in (1, 2, 3, 4))):
        raise InvalidImageError(
            f"Expected a 2-D grey or H x W x 3 colour image, got an array of shape {a.shape}."
        )
    check_size(a.shape[1], a.shape[0])  # before any per-pixel work
    chroma = rgb_chroma(a[..., :3]) if a.ndim == 3 and a.shape[2] >= 3 else 0.0
    if a.ndim == 3:
        a = _flatten_channels(a)
    if a.dtype == np.uint8:
        return Decoded(np.ascontiguousarray(a), chroma)
    if a.dtype == bool:
        return Decoded(a.astype(np.uint8) * 255, chroma)
    return Decoded(scale_to_uint8(a), chroma)


def rgb_chroma(rgb: np.ndarray) -> float:
    """Mean spread between the R, G and B of each pixel on a 0..255 scale (0 = grey)."""
    if np.issubdtype(rgb.dtype, np.integer):
        full = np.iinfo(rgb.dtype).max
    else:  # floats are in [0, 1], or else on a scale of their own
        rgb = np.nan_to_num(rgb, nan=0.0, posinf=0.0, neginf=0.0)
        full = max(float(rgb.max()), 1.0)
    if rgb.dtype not in (np.uint8, np.uint16, np.float32):  # the types OpenCV computes in
        rgb = rgb.astype(np.float32)
    # OpenCV on the three planes: 60 times faster than numpy's ptp along a 3-long axis.
    r, g, b = cv2.split(np.ascontiguousarray(rgb))
    spread = cv2.subtract(cv2.max(cv2.max(r, g), b), cv2.min(cv2.min(r, g), b))
    return cv2.mean(spread)[0] * 255 / full


def _flatten_channels(a: np.ndarray) -> np.ndarray:
    """H x W x C to H x W: ITU-R 601 luma as PIL computes it, alpha over black."""
    channels = a.shape[2]
    if channels == 1:
        return a[..., 0]
    grey = a[..., 0].astype(np.float32) if channels == 2 else a[..., :3].astype(np.float32) @ _LUMA
    if channels in (2, 4):  # the last channel is alpha
        full = np.iinfo(a.dtype).max if np.issubdtype(a.dtype, np.integer) else 1.0
        grey *= a[..., -1].astype(np.float32) / full
    return np.round(grey).astype(np.uint8) if a.dtype == np.uint8 else grey


_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def scale_to_uint8(a: np.ndarray, low_pct: float = 0.5, high_pct: float = 99.5) -> np.ndarray:
    """Map a high-bit-depth or float image to 0..255.

    Floats already in [0, 1] are taken as such; anything else is stretched
    between robust percentiles so that a few hot pixels do not darken the rest.
    NaN and infinity become the darkest value.
    """
    is_float = np.issubdtype(a.dtype, np.floating)
    a = a.astype(np.float32)  # float32 halves the memory of float64; 8 bits come out
    finite = np.isfinite(a)
    if not finite.any():
        raise InvalidImageError("The image holds no finite pixel values.")
    values = a[finite]
    if is_float and values.min() >= 0.0 and values.max() <= 1.0:
        return np.round(np.where(finite, a, 0.0) * 255).astype(np.uint8)
    low, high = np.percentile(values, [low_pct, high_pct])
    if high <= low:
        low, high = values.min(), values.max()
    if high <= low:
        return np.zeros(a.shape, dtype=np.uint8)
    a = np.where(finite, a, low)
    return np.round(np.clip((a - low) / (high - low), 0, 1) * 255).astype(np.uint8)
