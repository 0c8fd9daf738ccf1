"""The report's brain crop (after Rosebrock 2016) and the model-input transform."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import cv2
import numpy as np

from .errors import InvalidImageError


@dataclass(frozen=True)
class PreprocessConfig:
    """Everything that turns a grey slice into a network input.

    Stored in the model's config.json so that a pulled model preprocesses
    exactly as it was trained.
    """

    image_size: int = 96
    channels: int = 1
    blur_kernel: int = 5
    threshold: int = 45
    erode_iterations: int = 2
    dilate_iterations: int = 2
    # A "brain" smaller than this share of the picture is noise, not a head.
    min_brain_fraction: float = 0.02
    # "raw": grey levels / 255. "percentile": each slice scaled so that its
    # head's 99th percentile is 1, so that a dim scan looks like a bright one
    # (collections and scanners differ more in brightness than brains do).
    intensity: str = "raw"
    # False: the crop squashed to the square (every model before this option).
    # True: letterboxed, its height/width kept and the rest black, so that a
    # sagittal slice's long, low head does not look like an axial one's.
    letterbox: bool = False

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "PreprocessConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def crop_brain(grey: np.ndarray, cfg: PreprocessConfig = PreprocessConfig()) -> np.ndarray:
    """Crop ``grey`` (uint8, 2-D) to the bounding box of the largest bright blob (brain_box)."""
    x, y, w, h = brain_box(grey, cfg)
    return np.ascontiguousarray(grey[y : y + h, x : x + w])


def brain_box(grey: np.ndarray, cfg: PreprocessConfig = PreprocessConfig()) -> tuple[int, int, int, int]:
    """(x, y, width, height) in pixels of the brain in ``grey`` (uint8, 2-D).

    grey -> Gaussian blur -> threshold -> erode -> dilate -> largest external
    contour -> its extreme points -> bounding box. Raises InvalidImageError
    when nothing brain-like is found (blank, black or near-uniform image).
    """
    blurred = cv2.GaussianBlur(grey, (cfg.blur_kernel, cfg.blur_kernel), 0)
    # A uniform image (all white, all grey) thresholds to one frame-sized "blob".
    if int(blurred.max()) - int(blurred.min()) < cfg.threshold:
        raise InvalidImageError(
            "No brain found: the image is blank (one uniform shade). Upload an MRI "
            "slice with the head visible on a dark background."
        )
    _, mask = cv2.threshold(blurred, cfg.threshold, 255, cv2.THRESH_BINARY)
    mask = cv2.erode(mask, None, iterations=cfg.erode_iterations)
    mask = cv2.dilate(mask, None, iterations=cfg.dilate_iterations)
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        raise InvalidImageError(
            "No brain found: the image is blank or too dark. Upload an MRI slice "
            "with the head visible on a dark background."
        )
    largest = max(contours, key=cv2.contourArea)
    # Extreme points of the contour are exactly its bounding box corners.
    x, y, w, h = cv2.boundingRect(largest)
    if w * h < cfg.min_brain_fraction * grey.size or min(w, h) < 8:
        raise InvalidImageError(
            "No brain found: the bright region is too small to be a head. Upload an "
            "MRI slice with the head filling most of the picture."
        )
    return x, y, w, h


INTENSITY_MODES = ("raw", "percentile")
# Pixels darker than this share of the slice's brightest are background, not head.
HEAD_FLOOR = 0.1
HEAD_PERCENTILE = 99.0


def to_input(cropped: np.ndarray, cfg: PreprocessConfig = PreprocessConfig()) -> np.ndarray:
    """A cropped slice as the network input: float32 (S, S, C) in [0, 1]."""
    return scale_intensity(resize_square(cropped, cfg.image_size, cfg.letterbox), cfg)


def resize_square(cropped: np.ndarray, size: int, letterbox: bool = False) -> np.ndarray:
    """The crop at size x size, still uint8 grey: squashed, or letterboxed (its
    longer side fills the square, centred on black)."""
    top, left, height, width = crop_window(cropped.shape, size, letterbox)
    interpolation = cv2.INTER_AREA if min(cropped.shape) >= size else cv2.INTER_LINEAR
    resized = cv2.resize(cropped, (width, height), interpolation=interpolation)
    if not letterbox:
        return resized
    square = np.zeros((size, size), np.uint8)
    square[top : top + height, left : left + width] = resized
    return square


def crop_window(crop_shape: tuple, size: int, letterbox: bool) -> tuple[int, int, int, int]:
    """(top, left, height, width) in pixels of a crop of ``crop_shape`` inside its
    size x size network input: the whole square unless letterboxed."""
    if not letterbox:
        return 0, 0, size, size
    scale = size / max(crop_shape[:2])
    height, width = (max(1, round(n * scale)) for n in crop_shape[:2])
    return (size - height) // 2, (size - width) // 2, height, width


def square_to_crop(image: np.ndarray, crop_shape: tuple, letterbox: bool) -> np.ndarray:
    """A network-input-sized image (heat map, reconstruction) resized onto the
    crop it was made from, the letterbox's bars cut off first."""
    top, left, height, width = crop_window(crop_shape, image.shape[0], letterbox)
    inside = np.ascontiguousarray(image[top : top + height, left : left + width])
    return cv2.resize(inside, (crop_shape[1], crop_shape[0]), interpolation=cv2.INTER_LINEAR)


def scale_intensity(square: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    """uint8 (S, S) -> float32 (S, S, C) in [0, 1], as cfg.intensity says."""
    if cfg.intensity not in INTENSITY_MODES:
        raise ValueError(f"Unknown intensity mode {cfg.intensity!r}; choose one of {INTENSITY_MODES}.")
    x = square.astype(np.float32)
    if cfg.intensity == "percentile":
        head = x[x > HEAD_FLOOR * x.max()]
        top = float(np.percentile(head, HEAD_PERCENTILE)) if head.size else 255.0
        x = np.clip(x / max(top, 1.0), 0.0, 1.0)
    else:
        x = x / 255.0
    x = x[..., None]
    return np.repeat(x, cfg.channels, axis=-1) if cfg.channels > 1 else x
