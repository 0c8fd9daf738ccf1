"""DICOM and NIfTI slices to 8-bit grey.

DICOM: one frame (the middle one by default), modality LUT (rescale
slope/intercept), then the file's own VOI window, else percentile scaling;
MONOCHROME1 is inverted so that bright always means signal. The header says
the plane (ImageOrientationPatient) and whether it is MRI at all (Modality).
NIfTI: the volume is turned to canonical RAS+ and one axial slice is shown
the radiological way (anterior at the top, the patient's right on the left).
"""

from __future__ import annotations

import io
import warnings
import zlib

import nibabel as nib
import numpy as np
import pydicom
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut

from .errors import InvalidImageError
from .pixels import Decoded, array_to_grey, check_size, scale_to_uint8

# A .nii.gz may unpack to far more than the upload limit; refuse gzip bombs.
MAX_NIFTI_BYTES = 512 * 2**20
PIXEL_TAGS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


# ---------------------------------------------------------------- DICOM


def decode_dicom(data: bytes, frame: int | None = None) -> Decoded:
    """One frame of a DICOM file as 2-D uint8 grey (and its colourfulness)."""
    ds = _read_dicom(data)
    if not (ds.get("Rows") and ds.get("Columns")):
        raise InvalidImageError("The DICOM header lacks the image size (Rows, Columns).")
    check_size(int(ds.Columns), int(ds.Rows))  # before decoding: refuse bombs cheaply
    index = _pick(frame, dicom_frame_count(ds), "frame")
    pixels = _dicom_pixels(ds, index)
    if ds.get("PhotometricInterpretation") == "PALETTE COLOR":
        decoded = array_to_grey(apply_color_lut(pixels, ds))
    elif pixels.ndim == 3:  # RGB (pydicom already turned YBR into RGB)
        decoded = array_to_grey(pixels)
    else:
        decoded = Decoded(_monochrome_to_uint8(pixels, ds), 0.0)
    return decoded._replace(plane=dicom_plane(ds))


# Patient axes of DICOM (LPS): a slice whose normal runs along x (left) is
# sagittal, along y (posterior) coronal, along z (head) axial.
PLANE_OF_NORMAL = ("sagittal", "coronal", "axial")


def dicom_plane(ds: pydicom.Dataset) -> str:
    """The plane the header puts the slice in, "not MRI" for another modality,
    "" when the header does not say (no or broken ImageOrientationPatient).

    An oblique slice takes the plane its normal is closest to.
    """
    modality = str(ds.get("Modality") or "MR").upper()
    if modality != "MR":  # CT, X-ray, ultrasound, a secondary capture...
        return "not MRI"
    try:
        row, column = np.array(ds.ImageOrientationPatient, dtype=float).reshape(2, 3)
    except (AttributeError, TypeError, ValueError):
        return ""
    normal = np.cross(row, column)
    if not np.isfinite(normal).all() or np.linalg.norm(normal) < 1e-3:
        return ""
    return PLANE_OF_NORMAL[int(np.argmax(np.abs(normal)))]


def dicom_frame_count(ds) -> int:
    """Number of frames in a dataset (or in raw DICOM bytes)."""
    if isinstance(ds, (bytes, bytearray)):
        ds = _read_dicom(bytes(ds))
    return max(int(ds.get("NumberOfFrames") or 1), 1)


def _read_dicom(data: bytes) -> pydicom.Dataset:
    try:
        # force: accept files that lack the 128-byte preamble and "DICM".
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
    except Exception as exc:  # pydicom raises many types for broken files
        reason = _reason(exc)
        raise InvalidImageError(f"This is not a readable DICOM file ({reason}).") from None
    if not any(tag in ds for tag in PIXEL_TAGS):
        kind = f" (modality {ds.Modality})" if "Modality" in ds else ""
        raise InvalidImageError(
            f"This file{kind} holds no DICOM image (no pixel data): it is not DICOM, or a "
            "DICOM report or study index. Upload the DICOM file of an MRI slice."
        )
    return ds


def _dicom_pixels(ds: pydicom.Dataset, index: int) -> np.ndarray:
    """Decode only the chosen frame; name the transfer syntax when that fails."""
    try:
        ds.pixel_array_options(index=index)
        return ds.pixel_array
    except Exception as exc:  # missing codec, truncated data, bad header...
        syntax = getattr(ds, "file_meta", {}).get("TransferSyntaxUID")
        name = f"{syntax.name} ({syntax})" if syntax else "unknown transfer syntax"
        raise InvalidImageError(
            f"Could not decode the DICOM image, stored as {name}: {_reason(exc)}. "
            "Export the slice uncompressed, or as PNG."
        ) from None


def _monochrome_to_uint8(pixels: np.ndarray, ds: pydicom.Dataset) -> np.ndarray:
    grey = _windowed(apply_modality_lut(pixels, ds), ds)
    if ds.get("PhotometricInterpretation") == "MONOCHROME1":
        grey = 255 - grey  # MONOCHROME1: low values are white
    return grey


def _windowed(values: np.ndarray, ds: pydicom.Dataset) -> np.ndarray:
    """Apply the file's VOI window or LUT, else fall back to percentile scaling."""
    has_window = "WindowCenter" in ds and "WindowWidth" in ds
    if not (has_window or "VOILUTSequence" in ds):
        return scale_to_uint8(values)
    try:
        out = apply_voi_lut(values, ds)
        # The window maps onto a fixed output range; windowing the extremes
        # finds it, so contrast is exactly what the window asks for.
        low, high = apply_voi_lut(np.array([-(2**31), 2**31 - 1]), ds)
    except Exception:  # a malformed window (e.g. width 0) is not fatal
        return scale_to_uint8(values)
    if high <= low:
        return scale_to_uint8(values)
    return np.round(np.clip((out - low) / (high - low), 0, 1) * 255).astype(np.uint8)


# ---------------------------------------------------------------- NIfTI


def decode_nifti(data: bytes, name: str = "", slice_index: int | None = None) -> np.ndarray:
    """One axial slice of a NIfTI volume as 2-D uint8 grey (radiological view)."""
    img = _load_nifti(data, name, warn=True)
    index = _pick(slice_index, _axial_count(img), "axial slice")
    try:  # the header was fine; the data is only read here
        canonical = nib.as_closest_canonical(img)
        plane = np.asanyarray(canonical.dataobj[:, :, index])  # indexed (x: L->R, y: P->A)
    except Exception as exc:
        raise InvalidImageError(
            f"The NIfTI image data is truncated or corrupt ({_reason(exc)})."
        ) from None
    # Rows anterior -> posterior, columns patient's right -> left.
    return array_to_grey(np.ascontiguousarray(plane[::-1, ::-1].T)).grey


def nifti_slice_count(data: bytes, name: str = "") -> int:
    """Number of axial slices decode_nifti can show (for sizing a slider)."""
    return _axial_count(_load_nifti(data, name, warn=False))


def _axial_count(img) -> int:
    # The axis as_closest_canonical will put last, found without reading the data
    # (a degenerate affine maps no axis there: keep the stored third axis).
    axes = np.flatnonzero(nib.io_orientation(img.affine)[:, 0] == 2)
    return int(img.shape[axes[0] if axes.size else 2])


def _load_nifti(data: bytes, name: str, warn: bool) -> nib.Nifti1Image:
    """A 3-D image: 4-D and higher give their first volume, 2-D one slice."""
    raw = _gunzip(data) if data[:2] == b"\x1f\x8b" else data
    # NIfTI-2 headers are 540 bytes long, NIfTI-1 headers 348.
    is_nifti2 = 540 in (int.from_bytes(raw[:4], "little"), int.from_bytes(raw[:4], "big"))
    try:  # the suppressor keeps nibabel's header-fixing chatter out of the logs
        with nib.imageglobals.LoggingOutputSuppressor():
            img = (nib.Nifti2Image if is_nifti2 else nib.Nifti1Image).from_bytes(raw)
    except Exception as exc:
        label = f"'{name}'" if name else "This file"
        raise InvalidImageError(
            f"{label} is not a readable NIfTI image ({_reason(exc)})."
        ) from None
    if img.ndim > 3 and warn and int(np.prod(img.shape[3:])) > 1:
        warnings.warn(
            f"The NIfTI image is {img.ndim}-D {img.shape}; showing its first volume.",
            stacklevel=3,
        )
    while img.ndim > 3:
        img = img.slicer[..., 0]  # lazy: reads only that volume
    if img.ndim < 3:  # a lone 2-D slice: give it a third axis of length 1
        plane = np.asanyarray(img.dataobj)
        img = nib.Nifti1Image(plane.reshape(plane.shape + (1,) * (3 - plane.ndim)), img.affine)
    return img


def _gunzip(data: bytes) -> bytes:
    """Gunzip with a cap on the output size, so a bomb stops at the cap."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)  # 16+: expect a gzip wrapper
    try:
        raw = inflater.decompress(data, MAX_NIFTI_BYTES + 1)
    except zlib.error as exc:
        raise InvalidImageError(f"The .gz file is corrupt ({exc}).") from None
    if len(raw) > MAX_NIFTI_BYTES:
        raise InvalidImageError(
            f"The .nii.gz file unpacks to more than {MAX_NIFTI_BYTES // 2**20} MB. "
            "Upload a smaller volume or a single slice."
        )
    if not inflater.eof:
        raise InvalidImageError("The .gz file is truncated: it ends before the data does.")
    return raw


# ---------------------------------------------------------------- shared


def _pick(index: int | None, count: int, noun: str) -> int:
    """The middle one by default; a clear error for an index out of range."""
    if index is None:
        return count // 2
    if not 0 <= index < count:
        plural = "" if count == 1 else "s"
        raise InvalidImageError(
            f"{noun.capitalize()} {index} is out of range: this file has {count} {noun}{plural} "
            f"(0 to {count - 1})."
        )
    return int(index)


def _reason(exc: Exception, limit: int = 300) -> str:
    """pydicom and nibabel messages on one line, long lists of plugins cut short."""
    text = " ".join(str(exc).split()).rstrip(".") or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
