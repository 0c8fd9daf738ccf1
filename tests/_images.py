"""Test images built in code, so that no binary fixture is committed.

Shared helpers (conftest.py is owned elsewhere): import with
``from _images import brain, encode``.
"""

from __future__ import annotations

import io
import struct
import zlib

import cv2
import numpy as np
from PIL import Image


def brain(size: int = 256, height: int | None = None) -> np.ndarray:
    """A synthetic axial "brain": a bright ellipse with darker ventricles, on black."""
    height = height or size
    image = np.zeros((height, size), np.uint8)
    centre = (size // 2, height // 2)
    cv2.ellipse(image, centre, (size * 3 // 8, height * 7 // 16), 0, 0, 360, 200, -1)
    cv2.ellipse(image, centre, (size // 10, height // 6), 0, 0, 360, 110, -1)
    return image


def encode(image, fmt: str = "PNG", **save_options) -> bytes:
    """Encode a numpy array or PIL image with PIL."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    buffer = io.BytesIO()
    image.save(buffer, fmt, **save_options)
    return buffer.getvalue()


def png_with_size(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height, built without allocating it.

    A 1 x 1 PNG with its IHDR size patched (and the chunk CRC redone): the
    decoder must refuse it from the header, before touching any pixel.
    """
    data = bytearray(encode(np.zeros((1, 1), np.uint8)))
    # Signature (8) + length (4) + b"IHDR" (4), then width and height, big-endian.
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def dicom_bytes(frames: np.ndarray | None = None, **elements) -> bytes:
    """A minimal MR DICOM file; ``frames`` (H x W or N x H x W, uint16) become its pixels.

    Extra keyword arguments set DICOM elements (PhotometricInterpretation,
    WindowCenter, RescaleSlope, Rows...), overriding the defaults.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = MRImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.Modality = "MR"
    if frames is not None:
        frames = np.asarray(frames, np.uint16)
        if frames.ndim == 3:
            ds.NumberOfFrames = len(frames)
        ds.Rows, ds.Columns = frames.shape[-2:]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
        ds.PixelRepresentation = 0
        ds.PixelData = frames.tobytes()
    for keyword, value in elements.items():
        setattr(ds, keyword, value)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def textured_brain(rng: np.random.Generator, tumour: bool, size: int = 192) -> np.ndarray:
    """A varied synthetic slice: ellipse of random shape and texture, optionally a bright blob.

    The random texture keeps any two slices below the near-duplicate
    correlation, so a dataset of them splits into many clusters.
    """
    image = np.zeros((size, size), np.uint8)
    centre = (int(size / 2 + rng.integers(-10, 10)), int(size / 2 + rng.integers(-10, 10)))
    axes = (int(size * rng.uniform(0.28, 0.4)), int(size * rng.uniform(0.32, 0.45)))
    cv2.ellipse(image, centre, axes, float(rng.uniform(-20, 20)), 0, 360, 150, -1)
    noise = cv2.GaussianBlur(rng.normal(0, 1, (size, size)), (0, 0), 6)
    noise *= 40 / noise.std()
    image = np.where(image > 0, np.clip(image + noise, 50, 235), 0).astype(np.uint8)
    if tumour:
        blob = (centre[0] + int(rng.integers(-30, 30)), centre[1] + int(rng.integers(-30, 30)))
        cv2.circle(image, blob, int(rng.integers(10, 22)), 255, -1)
    return image


def write_dataset(root, per_class: int, seed: int = 0, folders=("yes", "no")) -> None:
    """A two-folder JPEG dataset of textured brains: tumour folder first."""
    from pathlib import Path

    rng = np.random.default_rng(seed)
    for folder, tumour in zip(folders, (True, False)):
        (Path(root) / folder).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            image = textured_brain(rng, tumour)
            (Path(root) / folder / f"{folder}{i}.jpg").write_bytes(encode(image, "JPEG", quality=92))
