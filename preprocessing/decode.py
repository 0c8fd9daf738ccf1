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

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import InvalidImageError
from .pixels import Decoded, array_to_grey, check_size, rgb_chroma, too_many_pixels_message

MAX_FILE_BYTES = 50 * 1024 * 1024

# Never hand a file to PIL plugins beyond these (EPS, for one, runs Ghostscript).
RASTER_FORMATS = ("PNG", "JPEG", "BMP", "TIFF", "GIF", "WEBP")
# PIL modes that hold more than 8 bits per pixel.
WIDE_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")
# Modes with transparency; transparent areas become black, like an MRI background.
ALPHA_MODES = ("RGBA", "LA", "PA", "P", "RGBa")
COLOUR_MODES = ("RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "HSV")

DICOM_SUFFIXES = (".dcm", ".dicom")
NIFTI_SUFFIXES = (".nii", ".nii.gz")


def decode(source, *, slice_index: int | None = None) -> np.ndarray:
    """Decode ``source`` to a 2-D ``uint8`` grey array.

    ``slice_index`` picks the frame of a multi-frame DICOM or the axial slice
    of a NIfTI volume (default: the middle one).
    """
    return decode_with_colour(source, slice_index=slice_index).grey


def decode_with_colour(source, *, slice_index: int | None = None) -> Decoded:
    """decode(), plus how colourful the picture was before it turned grey."""
    if isinstance(source, np.ndarray):
        return array_to_grey(source)
    if isinstance(source, Image.Image):
        return _pil_to_grey(source)
    name, data = _read_bytes(source)
    kind = _sniff(name, data)
    if kind == "dicom":
        # Imported here: pydicom and nibabel take longer to load than the rest of
        # preprocessing, and only DICOM and NIfTI uploads need them.
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
        # with check_size in _pil_to_grey, which names the limit in words.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=RASTER_FORMATS)
    except UnidentifiedImageError:
        raise InvalidImageError(
            "This file is not an image we can read. Upload a PNG, JPEG, BMP, TIFF, "
            "DICOM (.dcm) or NIfTI (.nii/.nii.gz) slice."
        ) from None
    except Image.DecompressionBombError:
        raise InvalidImageError(too_many_pixels_message(None)) from None
    except Exception as exc:  # PIL raises many types for broken headers
        raise InvalidImageError(f"The image header is broken ({exc}).") from None
    return _pil_to_grey(image)


def _pil_to_grey(image: Image.Image) -> Decoded:
    """Any PIL image (first frame if several) to uint8 grey, upright per EXIF."""
    check_size(*image.size)  # before load(): the header alone tells the size
    image = _load_upright(image)
    if image.mode in WIDE_MODES:
        return array_to_grey(np.asarray(image))
    if image.mode in ALPHA_MODES:
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba)
    if image.mode == "LAB":  # PIL cannot convert LAB; its L band is the lightness
        image = image.getchannel("L")
    chroma = rgb_chroma(np.asarray(image.convert("RGB"))) if image.mode in COLOUR_MODES else 0.0
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
