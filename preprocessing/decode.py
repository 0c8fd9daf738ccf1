"""Turn whatever a user hands us into one 8-bit grey image.

Accepted: a path, bytes, a file object, a PIL image or a numpy array holding
PNG, JPEG, BMP, TIFF (any PIL mode or bit depth), DICOM or NIfTI.
Everything else, and everything broken, raises InvalidImageError.

The grey conversion throws colour away, so decode_with_colour also says how
colourful the picture was: MRI is grey, a colour photo is not an MRI slice.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import InvalidImageError

MAX_FILE_BYTES = 50 * 1024 * 1024
# A 20,000 x 20,000 "pixel bomb" would need 400 MB as grey; MRI slices are a
# few hundred pixels a side, so 36 megapixels leaves a wide margin.
MAX_PIXELS = 6000 * 6000
MIN_SIDE = 32

# Never hand a file to PIL plugins beyond these (EPS, for one, runs Ghostscript).
RASTER_FORMATS = ("PNG", "JPEG", "BMP", "TIFF", "GIF", "WEBP")
# PIL modes that hold more than 8 bits per pixel.
WIDE_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")
# Modes with transparency; transparent areas become black, like an MRI background.
ALPHA_MODES = ("RGBA", "LA", "PA", "P", "RGBa")
COLOUR_MODES = ("RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "HSV")

DICOM_SUFFIXES = (".dcm", ".dicom")
NIFTI_SUFFIXES = (".nii", ".nii.gz")


class Decoded(NamedTuple):
    grey: np.ndarray  # 2-D uint8
    chroma: float  # mean spread between the colour channels, 0..255; 0 for grey sources
    # What the file's header says the slice is: "axial", "sagittal", "coronal",
    # "not MRI" (a DICOM of another modality), or "" when there is no header.
    plane: str = ""


def decode(source, *, slice_index: int | None = None) -> np.ndarray:
    """Decode ``source`` to a 2-D ``uint8`` grey array.

    ``slice_index`` picks the frame of a multi-frame DICOM or the axial slice
    of a NIfTI volume (default: the middle one).
    """
    return decode_with_colour(source, slice_index=slice_index).grey


def decode_with_colour(source, *, slice_index: int | None = None) -> Decoded:
    """decode(), plus how colourful the picture was before it turned grey."""
    if isinstance(source, np.ndarray):
        return _array_to_grey(source)
    if isinstance(source, Image.Image):
        return _pil_to_grey(source)
    name, data = _read_bytes(source)
    kind = _sniff(name, data)
    if kind == "dicom":
        from .medical import decode_dicom

        return decode_dicom(data, frame=slice_index)
    if kind == "nifti":
        from .medical import decode_nifti

        # decode_nifti cuts the volume axially, whatever its affine: axial by construction.
        return Decoded(decode_nifti(data, name=name, slice_index=slice_index), 0.0, "axial")
    return _decode_raster(data)


def _read_bytes(source) -> tuple[str, bytes]:
    """Return (lower-case file name or "", raw bytes), refusing huge files."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        name = ""
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise InvalidImageError(f"No such file: {path}")
        if path.stat().st_size > MAX_FILE_BYTES:
            raise InvalidImageError(_too_big(path.stat().st_size))
        data = path.read_bytes()
        name = path.name.lower()
    elif hasattr(source, "read"):
        data = source.read(MAX_FILE_BYTES + 1)
        if not isinstance(data, (bytes, bytearray)):
            raise InvalidImageError("Open the file in binary mode ('rb'), not as text.")
        name = Path(str(getattr(source, "name", ""))).name.lower()
    else:
        raise InvalidImageError(
            f"Cannot read an image from a {type(source).__name__}; pass a file path, "
            "bytes, a PIL image or a numpy array."
        )
    if len(data) > MAX_FILE_BYTES:
        raise InvalidImageError(_too_big(len(data)))
    if not data:
        raise InvalidImageError("The file is empty (0 bytes).")
    return name, data


def _too_big(n_bytes: int) -> str:
    return (
        f"The file is {n_bytes / 2**20:.0f} MB; the limit is {MAX_FILE_BYTES // 2**20} MB. "
        "Export the single slice as PNG or JPEG."
    )


def _sniff(name: str, data: bytes) -> str:
    """Tell DICOM and NIfTI from ordinary pictures by name, then by magic bytes."""
    if name.endswith(DICOM_SUFFIXES) or data[128:132] == b"DICM":
        return "dicom"
    if name.endswith(NIFTI_SUFFIXES):
        return "nifti"
    if data[:2] == b"\x1f\x8b" or data[344:348] in (b"n+1\0", b"ni1\0"):
        return "nifti"
    return "raster"


def _decode_raster(data: bytes) -> Decoded:
    try:
        # Opening reads the header only; PIL's own bomb warning is redundant
        # with our _check_size below, which names the limit in words.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=RASTER_FORMATS)
    except UnidentifiedImageError:
        raise InvalidImageError(
            "This file is not an image we can read. Upload a PNG, JPEG, BMP, TIFF, "
            "DICOM (.dcm) or NIfTI (.nii/.nii.gz) slice."
        ) from None
    except Image.DecompressionBombError:
        raise InvalidImageError(_too_many_pixels(None)) from None
    except Exception as exc:  # PIL raises many types for broken headers
        raise InvalidImageError(f"The image header is broken ({exc}).") from None
    return _pil_to_grey(image)


def _too_many_pixels(size) -> str:
    dims = f" ({size[0]} x {size[1]})" if size else ""
    return (
        f"The image is too large{dims}; the limit is {MAX_PIXELS / 1e6:.0f} megapixels. "
        "Downscale it or export the single slice."
    )


def _check_size(width: int, height: int) -> None:
    """Refuse bombs from the header alone, before any pixel is decoded."""
    if width * height > MAX_PIXELS:
        raise InvalidImageError(_too_many_pixels((width, height)))
    if min(width, height) < MIN_SIDE:
        raise InvalidImageError(
            f"The image is only {width} x {height} pixels; at least {MIN_SIDE} x {MIN_SIDE} "
            "is needed to find the brain."
        )


def _pil_to_grey(image: Image.Image) -> Decoded:
    """Any PIL image (first frame if several) to uint8 grey, upright per EXIF."""
    _check_size(*image.size)  # before load(): the header alone tells the size
    image = _load_upright(image)
    if image.mode in WIDE_MODES:
        return _array_to_grey(np.asarray(image))
    if image.mode in ALPHA_MODES:
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba)
    if image.mode == "LAB":  # PIL cannot convert LAB; its L band is the lightness
        image = image.getchannel("L")
    chroma = _chroma(np.asarray(image.convert("RGB"))) if image.mode in COLOUR_MODES else 0.0
    try:
        return Decoded(np.asarray(image.convert("L"), dtype=np.uint8).copy(), chroma)
    except ValueError:
        raise InvalidImageError(f"Images in PIL mode {image.mode!r} are not supported.") from None


def _load_upright(image: Image.Image) -> Image.Image:
    try:
        image.load()
        return ImageOps.exif_transpose(image)
    except Exception as exc:
        raise InvalidImageError(
            f"The image is truncated or corrupt and could not be decoded ({exc}). "
            "Download or export it again."
        ) from None


def _array_to_grey(array: np.ndarray) -> Decoded:
    """Any 2-D or H x W x {1,2,3,4} (grey/colour, maybe with alpha) array to uint8 grey."""
    a = np.asarray(array)
    if a.dtype.kind not in "buif":  # bool, unsigned, signed, float: not complex/object
        raise InvalidImageError(f"Cannot read an image from an array of type {a.dtype}.")
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] in (1, 2, 3, 4))):
        raise InvalidImageError(
            f"Expected a 2-D grey or H x W x 3 colour image, got an array of shape {a.shape}."
        )
    _check_size(a.shape[1], a.shape[0])  # before any per-pixel work
    chroma = _chroma(a[..., :3]) if a.ndim == 3 and a.shape[2] >= 3 else 0.0
    if a.ndim == 3:
        a = _flatten_channels(a)
    if a.dtype == np.uint8:
        return Decoded(np.ascontiguousarray(a), chroma)
    if a.dtype == bool:
        return Decoded(a.astype(np.uint8) * 255, chroma)
    return Decoded(scale_to_uint8(a), chroma)


def _chroma(rgb: np.ndarray) -> float:
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
