"""What each slice of each collection is: its label, tumour type, plane and patient.

The five public collections (../shared/data/README.md) each lay out and
label their files differently; this module turns each layout into one list of
Entry rows, so the rest of training never looks at folder names. A folder that
is none of the five is read as a generic two-class dataset (yes/no,
tumor/normal, abnormal/normal), named after the folder.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
# Folder name -> class index. 1 = tumour.
FOLDER_LABELS = {
    "yes": 1, "tumor": 1, "tumour": 1, "abnormal": 1,
    "no": 0, "normal": 0,
}  # fmt: skip
LABEL_NAMES = {0: "normal", 1: "tumor"}
TUMOR_TYPES = ("glioma", "meningioma", "pituitary")
# sartaj/views.csv's hand labels that are not brain MRI, or not sure to be:
# kept out of the tumour/normal labels.
NOT_LABELLED_MRI = ("ct", "doubtful")


@dataclass(frozen=True)
class Entry:
    """One slice file and what is known about it."""

    collection: str  # "br35h", "sartaj", "figshare", "ms", "oasis", or a folder's name
    name: str  # "collection/relative/path.jpg": unique over the union
    path: Path
    label: int  # 1 = tumour
    tumor_type: str = ""  # one of TUMOR_TYPES, "" when none or unknown
    plane: str = ""  # "axial", "sagittal", "coronal", "sagittal-or-coronal", "" unknown
    patient: str = ""  # "" when the collection does not say


def catalogue(root: Path) -> list[Entry]:
    """Every labelled slice under ``root``, one of the five collections or a generic one."""
    root = Path(root)
    reader = READERS.get(root.name.lower(), _two_folders)
    entries = reader(root)
    if not entries:
        raise ValueError(f"{root}: no labelled image files found.")
    return entries


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def _entry(root: Path, path: Path, label: int, **known) -> Entry:
    collection = root.name.lower()
    return Entry(
        collection, f"{collection}/{path.relative_to(root).as_posix()}", path, label, **known
    )


def _two_folders(root: Path) -> list[Entry]:
    """yes/ and no/ (or tumor/normal, abnormal/normal)."""
    folders = [d for d in sorted(root.iterdir()) if d.is_dir()]
    labels = {d.name: FOLDER_LABELS.get(d.name.lower()) for d in folders}
    if None in labels.values() or set(labels.values()) != {0, 1}:
        raise ValueError(
            f"{root}: expected two class folders, one of yes/tumor/abnormal and one of "
            f"no/normal, or one of the collections {sorted(READERS)}; found {sorted(labels)}."
        )
    return [_entry(root, p, labels[d.name]) for d in folders for p in _images(d)]


def _br35h(root: Path) -> list[Entry]:
    return [
        _entry(root, p, FOLDER_LABELS[folder], plane="axial")
        for folder in ("yes", "no")
        for p in _images(root / folder)
    ]


def _sartaj(root: Path) -> list[Entry]:
    """Training/ and Testing/ x glioma_tumor, meningioma_tumor, pituitary_tumor, no_tumor."""
    views = _csv_by_path(root / "views.csv")
    entries = []
    for p in _images(root):
        relative = p.relative_to(root).as_posix()
        view = views.get(relative, {}).get("view", "")
        if view in NOT_LABELLED_MRI:
            continue
        kind = p.parent.name.removesuffix("_tumor")
        label = 0 if kind == "no" else 1
        entries.append(_entry(root, p, label, tumor_type="" if label == 0 else kind, plane=view))
    return entries


def _figshare(root: Path) -> list[Entry]:
    """glioma/, meningioma/, pituitary/: all tumours, with patients.csv."""
    patients = _csv_by_path(root / "patients.csv")
    return [
        _entry(root, p, 1, tumor_type=p.parent.name, patient=patients[relative]["patient"])
        for p in _images(root)
        if (relative := p.relative_to(root).as_posix()) in patients
    ]


def figshare_box(path: Path) -> tuple[float, float, float, float] | None:
    """The tumour's box (x0, y0, x1, y1), as fractions of the image, from the
    ``N.txt`` beside a figshare ``N.jpg`` (YOLO form: class cx cy w h); None without one."""
    text = Path(path).with_suffix(".txt")
    if not text.is_file():
        return None
    _, cx, cy, w, h = map(float, text.read_text().split()[:5])
    return cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2


def _ms(root: Path) -> list[Entry]:
    """Tumour-free slices of MS patients; slices.csv gives plane and patient."""
    return [
        _entry(root, root / relative, 0, plane=row["plane"], patient=row["patient"])
        for relative, row in _csv_by_path(root / "slices.csv").items()
    ]


def _oasis(root: Path) -> list[Entry]:
    """Tumour-free, skull-stripped middle axial T1 slices."""
    return [_entry(root, p, 0, plane="axial") for p in _images(root)]


def _csv_by_path(path: Path) -> dict[str, dict]:
    with path.open(newline="") as f:
        return {row["path"]: row for row in csv.DictReader(f)}


READERS = {"br35h": _br35h, "sartaj": _sartaj, "figshare": _figshare, "ms": _ms, "oasis": _oasis}
