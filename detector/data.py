"""Training data: decode the collections once, find near-duplicates, split by cluster."""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from sklearn.model_selection import StratifiedGroupKFold, train_test_split

from preprocessing import (
    InvalidImageError,
    PreprocessConfig,
    brain_box,
    crop_brain,
    crop_window,
    decode_with_colour,
    resize_square,
    scale_intensity,
)

from .catalogue import LABEL_NAMES, TUMOR_TYPES, Entry, catalogue, figshare_box

__all__ = [
    "LABEL_NAMES",
    "Slices",
    "load_slices",
    "split_at_random",
    "split_by_cluster",
    "tumor_boxes",
]

THUMBNAIL_SIZE = 32
DUPLICATE_CORRELATION = 0.95
# Collections without patient ids whose subjects are recovered by correlation
# (Slices.name_subjects).
SUBJECT_CORRELATION = {"oasis": 0.98}
# What Slices keeps per slice, as the cache stores it: text lists and numpy arrays.
_TEXT_FIELDS = ("names", "sha256", "collections", "tumor_types", "planes", "patients")
_ARRAY_FIELDS = ("labels", "chroma", "squares", "thumbnails", "crop_thumbnails")


@dataclass
class Slices:
    """Every usable slice of one or more collections, decoded and cropped once."""

    names: list[str]  # "collection/relative/path.jpg"
    sha256: list[str]
    collections: list[str]
    tumor_types: list[str]  # "" for normals and unknown types
    planes: list[str]  # catalogue.Entry.plane
    patients: list[str]  # "" when unknown
    labels: np.ndarray  # int, 1 = tumour
    chroma: np.ndarray  # how colourful each picture is (preprocessing.decode_with_colour)
    squares: np.ndarray  # (N, S, S) uint8: each brain crop resized to the model's side
    # (N, 32*32) standardised thumbnails of the whole image and of the crop:
    # some copies differ only in framing, and only the crops show it.
    thumbnails: np.ndarray
    crop_thumbnails: np.ndarray
    skipped: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.names)

    def clusters(self, threshold: float = DUPLICATE_CORRELATION) -> np.ndarray:
        """Group id per slice: slices of one patient, and near-duplicates (either
        thumbnail pair correlates >= threshold), share one.

        Two slices of different known patients of one collection are never
        joined: registered, skull-stripped slices of different people at the
        same level correlate >= 0.95 without being copies (ms/, oasis/).
        """
        rows, cols = [], []
        for i, j in self._near_duplicate_pairs(threshold):
            copies = ~self.different_patients(i, j)
            rows.append(i[copies]), cols.append(j[copies])
        patients = self._patient_ids()
        for patient in set(patients) - {""}:
            members = np.flatnonzero(patients == patient)
            rows.append(members), cols.append(np.full(len(members), members[0]))
        return _components(np.concatenate(rows), np.concatenate(cols), len(self))

    def different_patients(self, i, j) -> np.ndarray:
        """Whether slices i and j (index arrays) are of two different known patients."""
        patients = self._patient_ids()
        return (patients[i] != patients[j]) & (patients[i] != "") & (patients[j] != "")

    def _patient_ids(self) -> np.ndarray:
        """ "collection/patient", unique over the union; "" when unknown."""
        return np.array([f"{c}/{p}" if p else "" for c, p in zip(self.collections, self.patients)])

    def _near_duplicate_pairs(self, threshold: float, index=None):
        """(i, j) index arrays of slice pairs whose thumbnails correlate >= threshold."""
        index = np.arange(len(self)) if index is None else np.asarray(index)
        for thumbs in (self.thumbnails[index], self.crop_thumbnails[index]):
            thumbs = thumbs.astype(np.float32)
            for start in range(0, len(thumbs), 2048):  # blocks: the full matrix would be GBs
                i, j = np.nonzero(thumbs[start : start + 2048] @ thumbs.T >= threshold)
                yield index[i + start], index[j]

    def max_correlation(self, index: np.ndarray, others: np.ndarray) -> np.ndarray:
        """For each slice in index, its highest thumbnail correlation with any of others."""
        return np.maximum(
            (self.thumbnails[index] @ self.thumbnails[others].T).max(axis=1),
            (self.crop_thumbnails[index] @ self.crop_thumbnails[others].T).max(axis=1),
        )

    def inputs(self, cfg: PreprocessConfig, index=None) -> np.ndarray:
        """Network inputs, float32 (N, S, S, C), the way preprocessing.to_input makes them."""
        squares = self.squares if index is None else self.squares[index]
        side = cfg.image_size
        if squares.shape[1] != side:  # e.g. the label audit's smaller network
            squares = [cv2.resize(s, (side, side), interpolation=cv2.INTER_AREA) for s in squares]
        return np.stack([scale_intensity(s, cfg) for s in squares])

    def type_indices(self) -> np.ndarray:
        """Each slice's tumour type as an index into catalogue.TUMOR_TYPES; -1: none or unknown."""
        return np.array([TUMOR_TYPES.index(t) if t else -1 for t in self.tumor_types])

    def in_collection(self, name: str) -> np.ndarray:
        return np.array([c == name for c in self.collections])

    def name_subjects(self) -> None:
        """Give the slices of collections without patient ids (SUBJECT_CORRELATION) a subject.

        oasis/ holds 32 consecutive slices of each of 100 registered heads:
        joined at correlation >= 0.98 they form exactly those 100 groups of 32,
        while at 0.95 neighbouring heads chain into one.
        """
        for collection, threshold in SUBJECT_CORRELATION.items():
            index = np.flatnonzero(self.in_collection(collection))
            if len(index) == 0 or any(self.patients[i] for i in index):
                continue
            i, j = map(np.concatenate, zip(*self._near_duplicate_pairs(threshold, index)))
            where = {k: n for n, k in enumerate(index)}
            subject = _components(
                np.array([where[k] for k in i]), np.array([where[k] for k in j]), len(index)
            )
            for k, s in zip(index, subject):
                self.patients[k] = f"subject{s}"


def _components(rows: np.ndarray, cols: np.ndarray, n: int) -> np.ndarray:
    graph = coo_matrix((np.ones(len(rows), bool), (rows, cols)), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def load_slices(
    roots, cfg: PreprocessConfig | None = None, cache_dir: Path | None = None
) -> Slices:
    """Decode every slice of the collections under ``roots`` (catalogue.catalogue).

    With ``cache_dir``, the result is kept there between runs, keyed by the
    files' names, sizes and times and the crop settings.
    """
    cfg = cfg or PreprocessConfig()
    entries = [
        e
        for root in ([roots] if isinstance(roots, (str, Path)) else roots)
        for e in catalogue(root)
    ]
    path = Path(cache_dir or ".") / f"slices-{_cache_key(entries, cfg)}.npz"
    if cache_dir and path.is_file():
        return _read_cache(path)
    slices = _decode_all(entries, cfg)
    slices.name_subjects()
    if cache_dir:
        _write_cache(slices, path)
    return slices


def _decode_all(entries: list[Entry], cfg: PreprocessConfig) -> Slices:
    kept, hashes, chroma, squares, thumbs, crop_thumbs, skipped = [], [], [], [], [], [], []
    for entry in entries:
        data = entry.path.read_bytes()
        try:
            grey, colour = decode_with_colour(data)[:2]
            crop = crop_brain(grey, cfg)
        except InvalidImageError as exc:
            skipped.append(f"{entry.name}: {exc}")
            continue
        kept.append(entry)
        hashes.append(hashlib.sha256(data).hexdigest())
        chroma.append(colour)
        squares.append(resize_square(crop, cfg.image_size, cfg.letterbox))
        thumbs.append(thumbnail(grey))
        crop_thumbs.append(thumbnail(crop))
    if skipped:
        warnings.warn(f"Skipped {len(skipped)} unreadable files, e.g. {skipped[0]}", stacklevel=3)
    return Slices(
        names=[e.name for e in kept], sha256=hashes, collections=[e.collection for e in kept],
        tumor_types=[e.tumor_type for e in kept], planes=[e.plane for e in kept],
        patients=[e.patient for e in kept], labels=np.array([e.label for e in kept]),
        chroma=np.array(chroma), squares=np.stack(squares), thumbnails=np.stack(thumbs),
        crop_thumbnails=np.stack(crop_thumbs), skipped=skipped,
    )  # fmt: skip


def _cache_key(entries: list[Entry], cfg: PreprocessConfig) -> str:
    h = hashlib.sha256(
        json.dumps({k: v for k, v in cfg.to_dict().items() if k != "intensity"}).encode()
    )
    for e in entries:
        stat = e.path.stat()
        h.update(
            f"{e.name}|{e.label}|{e.tumor_type}|{e.plane}|{e.patient}|{stat.st_size}|{stat.st_mtime_ns}\n".encode()
        )
    return h.hexdigest()[:16]


def _write_cache(slices: Slices, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_suffix(".tmp.npz")
    np.savez(
        staging,
        **{name: np.array(getattr(slices, name), dtype=str) for name in (*_TEXT_FIELDS, "skipped")},
        **{name: getattr(slices, name) for name in _ARRAY_FIELDS},
    )
    staging.rename(path)  # atomic: a crash never leaves half a cache


def _read_cache(path: Path) -> Slices:
    with np.load(path, allow_pickle=False) as npz:
        return Slices(
            **{name: npz[name].tolist() for name in (*_TEXT_FIELDS, "skipped")},
            **{name: npz[name] for name in _ARRAY_FIELDS},
        )


def thumbnail(grey: np.ndarray) -> np.ndarray:
    """A 32x32 thumbnail with zero mean and unit norm: dot product = correlation."""
    t = cv2.resize(grey, (THUMBNAIL_SIZE, THUMBNAIL_SIZE), interpolation=cv2.INTER_AREA)
    t = t.astype(np.float64).ravel()
    t -= t.mean()
    return t / max(np.linalg.norm(t), 1e-9)


def slice_files(names: list[str], roots) -> list[Path]:
    """Each slice's file, from its name ("collection/relative/path.jpg") and the roots."""
    folders = {Path(root).name.lower(): Path(root) for root in roots}
    return [folders[name.split("/", 1)[0]] / name.split("/", 1)[1] for name in names]


def tumor_boxes(names: list[str], roots, cfg: PreprocessConfig) -> np.ndarray:
    """(N, 4) each named slice's tumour box (x0, y0, x1, y1) as fractions of its
    network input (the brain crop, squashed or letterboxed as ``cfg`` says); NaN for
    slices without a box (only figshare's have one, catalogue.figshare_box)."""
    boxes = np.full((len(names), 4), np.nan)
    for i, (name, path) in enumerate(zip(names, slice_files(names, roots))):
        box = figshare_box(path) if name.startswith("figshare/") else None
        if box is None:
            continue
        grey = decode_with_colour(path.read_bytes())[0]
        x, y, w, h = brain_box(grey, cfg)
        height, width = grey.shape
        in_crop = [
            (box[0] * width - x) / w,
            (box[1] * height - y) / h,
            (box[2] * width - x) / w,
            (box[3] * height - y) / h,
        ]
        top, left, rows, cols = crop_window((h, w), cfg.image_size, cfg.letterbox)
        in_square = [left, top, left, top] + np.clip(in_crop, 0, 1) * [cols, rows, cols, rows]
        boxes[i] = in_square / cfg.image_size
    return boxes


def split_by_cluster(
    strata: np.ndarray, clusters: np.ndarray, seed: int, *, with_test: bool = True
) -> dict[str, np.ndarray]:
    """About 70/10/20 train/val/test (without test: 87.5/12.5), whole clusters at a time.

    ``strata``: what each part should hold in proportion (the label, or
    collection x label so that every collection is tested).
    """
    index = np.arange(len(strata))
    rest, test = index, index[:0]
    if with_test:
        outer = StratifiedGroupKFold(n_splits=5, shuffle=True, random_state=seed)
        rest, test = next(outer.split(index, strata, clusters))
    inner = StratifiedGroupKFold(n_splits=8, shuffle=True, random_state=seed)
    train, val = next(inner.split(rest, strata[rest], clusters[rest]))
    return {"train": rest[train], "val": rest[val], "test": test}


def split_at_random(labels: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """The report's way (leaky: copies of a scan land on both sides). For comparison only."""
    index = np.arange(len(labels))
    rest, test = train_test_split(index, test_size=0.2, stratify=labels, random_state=seed)
    train, val = train_test_split(rest, test_size=0.125, stratify=labels[rest], random_state=seed)
    return {"train": train, "val": val, "test": test}
