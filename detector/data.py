"""Training data: load a two-folder dataset, find near-duplicates, split by cluster."""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass, field

import cv2
import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components
from sklearn.model_selection import StratifiedGroupKFold, train_test_split

from preprocessing import (
    InvalidImageError,
    PreprocessConfig,
    crop_brain,
    decode_with_colour,
    to_input,
)

# Folder name -> class index. 1 = tumour.
FOLDER_LABELS = {
    "yes": 1, "tumor": 1, "tumour": 1, "abnormal": 1,
    "no": 0, "normal": 0,
}  # fmt: skip
LABEL_NAMES = {0: "normal", 1: "tumor"}
THUMBNAIL_SIZE = 32
DUPLICATE_CORRELATION = 0.95


@dataclass
class Slices:
    """Every usable slice of a dataset, decoded once."""

    names: list[str]  # file name as stored, e.g. "yes/y12.jpg"
    sha256: list[str]
    labels: np.ndarray  # int, 1 = tumour
    crops: list[np.ndarray]  # uint8 grey brain crops
    chroma: np.ndarray  # how colourful each picture is (preprocessing.decode_with_colour)
    # (N, 32*32) standardised thumbnails of the whole image and of the crop:
    # some copies differ only in framing, and only the crops show it.
    thumbnails: np.ndarray
    crop_thumbnails: np.ndarray
    skipped: list[str] = field(default_factory=list)

    def clusters(self, threshold: float = DUPLICATE_CORRELATION) -> np.ndarray:
        """Cluster id per slice: linked when either thumbnail pair correlates >= threshold."""
        adjacency = (self.thumbnails @ self.thumbnails.T >= threshold) | (
            self.crop_thumbnails @ self.crop_thumbnails.T >= threshold
        )
        return connected_components(csr_matrix(adjacency), directed=False)[1]

    def max_correlation(self, index: np.ndarray, others: np.ndarray) -> np.ndarray:
        """For each slice in index, its highest thumbnail correlation with any of others."""
        return np.maximum(
            (self.thumbnails[index] @ self.thumbnails[others].T).max(axis=1),
            (self.crop_thumbnails[index] @ self.crop_thumbnails[others].T).max(axis=1),
        )

    def inputs(self, cfg: PreprocessConfig, index=None) -> np.ndarray:
        index = range(len(self.crops)) if index is None else index
        return np.stack([to_input(self.crops[i], cfg) for i in index])


def load_slices(source: str, cfg: PreprocessConfig = PreprocessConfig()) -> Slices:
    """Load a local folder (imagefolder layout) or a Hub dataset id via `datasets`."""
    import datasets

    dataset = _load_dataset(source, datasets)
    label_feature = dataset.features["label"]
    folder_to_label = _label_map(label_feature.names)
    names, hashes, labels, crops, chroma, thumbs, skipped = [], [], [], [], [], [], []
    for row in dataset.cast_column("image", datasets.Image(decode=False)):
        data, name = _row_bytes(row["image"], label_feature.int2str(row["label"]))
        try:
            grey, colour = decode_with_colour(data)
            crop = crop_brain(grey, cfg)
        except InvalidImageError as exc:
            skipped.append(f"{name}: {exc}")
            continue
        names.append(name)
        hashes.append(hashlib.sha256(data).hexdigest())
        labels.append(folder_to_label[label_feature.int2str(row["label"])])
        crops.append(crop)
        chroma.append(colour)
        thumbs.append(thumbnail(grey))
    if skipped:
        warnings.warn(f"Skipped {len(skipped)} unreadable files, e.g. {skipped[0]}", stacklevel=2)
    crop_thumbs = np.stack([thumbnail(c) for c in crops])
    return Slices(
        names, hashes, np.array(labels), crops, np.array(chroma), np.stack(thumbs), crop_thumbs, skipped
    )


def _load_dataset(source: str, datasets):
    from pathlib import Path

    if Path(source).is_dir():
        return datasets.load_dataset("imagefolder", data_dir=source, split="train")
    return datasets.load_dataset(source, split="train")


def _label_map(folders: list[str]) -> dict[str, int]:
    unknown = [f for f in folders if f.lower() not in FOLDER_LABELS]
    labels = {FOLDER_LABELS.get(f.lower()) for f in folders}
    if unknown or labels != {0, 1}:
        raise ValueError(
            f"Expected two class folders, one of yes/tumor/abnormal and one of no/normal; "
            f"found {folders}."
        )
    return {f: FOLDER_LABELS[f.lower()] for f in folders}


def _row_bytes(image: dict, folder: str) -> tuple[bytes, str]:
    from pathlib import Path

    if image.get("bytes"):
        return image["bytes"], f"{folder}/{Path(image.get('path') or 'image').name}"
    path = Path(image["path"])
    return path.read_bytes(), f"{folder}/{path.name}"


def thumbnail(grey: np.ndarray) -> np.ndarray:
    """A 32x32 thumbnail with zero mean and unit norm: dot product = correlation."""
    t = cv2.resize(grey, (THUMBNAIL_SIZE, THUMBNAIL_SIZE), interpolation=cv2.INTER_AREA)
    t = t.astype(np.float64).ravel()
    t -= t.mean()
    return t / max(np.linalg.norm(t), 1e-9)


def split_by_cluster(labels: np.ndarray, clusters: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """About 70/10/20 train/val/test, whole clusters at a time, stratified by label."""
    index = np.arange(len(labels))
    outer = StratifiedGroupKFold(n_splits=5, shuffle=True, random_state=seed)
    rest, test = next(outer.split(index, labels, clusters))
    inner = StratifiedGroupKFold(n_splits=8, shuffle=True, random_state=seed)
    train, val = next(inner.split(rest, labels[rest], clusters[rest]))
    return {"train": rest[train], "val": rest[val], "test": test}


def split_at_random(labels: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """The report's way (leaky: copies of a scan land on both sides). For comparison only."""
    index = np.arange(len(labels))
    rest, test = train_test_split(index, test_size=0.2, stratify=labels, random_state=seed)
    train, val = train_test_split(rest, test_size=0.125, stratify=labels[rest], random_state=seed)
    return {"train": train, "val": val, "test": test}
