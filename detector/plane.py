"""The plane gate: is a slice axial brain MRI, a sagittal or coronal MRI slice, or no brain MRI at all?

The classifier reads axial slices; shown a coronal slice it still answers, with
confidence. The gate is a small network that names the plane of the slice
(PLANES), so that the detector can refuse to read a non-axial one. A DICOM or
NIfTI header says the plane exactly (preprocessing.Decoded.plane): the
detector trusts it over the gate.

What it learns from (``gate_examples``):

- the slices of the union whose plane is known: Br35H and OASIS (axial),
  ms/slices.csv (exact planes), sartaj/views.csv (hand labels; its
  "sagittal-or-coronal" label is one of two classes, learnt with the
  set-valued loss -log(p_sagittal + p_coronal)), figshare's planes labelled
  by eye (HAND_LABELS), and unlabelled slices that are near-copies of a
  labelled one (``known_planes``: most figshare slices are copies of sartaj
  ones, and take their plane);
- extras, made here: slices of the MNI152 template cut in all three planes
  and made to look like exported JPEGs, non-MRI pictures (scikit-image's
  photos, synthetic documents), and CT: a head CT volume (HEAD_CT) cut in all
  three planes under random windows to learn from, sartaj's CT slices
  (views.csv "ct") to test on. (MADE_EXTRAS were tried as well.)

The slices of the union follow the classifier's split (by cluster, so by
patient); the extras are split by source: template cuts and the CT volume
train only, pictures by picture, sartaj's CT slices test only (several are
copies of each other, so they cannot be split by file). The network sees the
classifier's input averaged to grey, resized to GATE_SIZE and standardised
per slice, so it does not depend on the classifier's size or intensity scaling.
"""

from __future__ import annotations

import csv
import functools
import io
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

from preprocessing import (
    InvalidImageError,
    PreprocessConfig,
    crop_brain,
    resize_square,
    to_input,
)

from .lesions import head_mask
from .ood import (
    DEFAULT_PLANE_THRESHOLD,
    MRI_PLANES,
    failed_checks,
    feature_distances,
    fit_feature_distance,
)

PLANES = ("axial", "sagittal", "coronal", "not MRI")
# The gate tells sagittal and coronal slices from axial ones far more surely than from
# each other (README, "Naming the plane"): a verdict names one only when it is this
# many times as likely as the other (set a priori, not tuned), else SAGITTAL_OR_CORONAL.
SURE_PLANE_RATIO = 2.0
SAGITTAL_OR_CORONAL = "sagittal or coronal"
GATE_SIZE = 64
# The classifier's augmentations (detector.training.AUGMENTATIONS) the gate trains with:
# "sequence" changes which tissue is bright, so that the plane is learnt from shapes, not
# from a collection's look (ahead of "geometric" on held-out sartaj; docs/experiments.md).
GATE_AUGMENT = "sequence"
# The feature distance check (detector.ood) flags at most this share of val's axial
# slices of AXIAL_TARGETS: the autoencoder's rule (train.ANOMALY_QUANTILE).
DISTANCE_QUANTILE = 0.995
# Which of PLANES each label allows.
ALLOWED = {
    "axial": ("axial",),
    "sagittal": ("sagittal",),
    "coronal": ("coronal",),
    "sagittal-or-coronal": ("sagittal", "coronal"),
    "not MRI": ("not MRI",),
}
# figshare slices labelled by eye (figshare has no plane labels), in sartaj/views.csv's
# form plus how each was labelled: every figshare slice that is not a near-copy of a
# sartaj/views.csv one. They follow the split: train's train the gate, test's measure it.
HAND_LABELS = Path(__file__).with_name("figshare_views.csv")
# One head CT to learn CT from (InVesalius's example "ProMED CT 0051": 108 axial
# slices in Hounsfield units), from Debian's invesalius-examples package.
HEAD_CT = Path("/usr/share/doc/invesalius-examples/examples/Cranium.inv3")
# Made extras a gate can also learn from (fit_plane_gate's ``made_extras``; tried, not
# adopted: docs/experiments.md): CT made from the template's tissue maps (template_ct_cuts),
# half the template cuts with a T1 skull drawn round the brain (template_cuts), and half
# the union's train slices again with their skull stripped (skull_stripped).
MADE_EXTRAS = ("template-ct", "skulled-template", "skull-stripped")
SKULL_RIM = (0.05, 0.12)  # of the side: the scalp and skull a skull-stripped export lacks
# CT windows (level, width in HU) a CT slice is exported under: brain, subdural,
# stroke, soft tissue, bone, and the volume's own.
CT_WINDOWS = ((40, 80), (75, 200), (35, 40), (50, 400), (500, 2000), (-18, 406))
# scikit-image's bundled pictures, none of them MRI. The test ones are never trained on.
PICTURES_TRAIN = (
    "astronaut", "camera", "chelsea", "coins", "grass", "horse", "hubble_deep_field", "ihc",
    "logo", "moon", "motorcycle_left", "page", "rocket", "phantom",
)  # fmt: skip
PICTURES_TEST = (
    "brick",
    "cell",
    "clock_motion",
    "coffee",
    "gravel",
    "microaneurysms",
    "retina",
    "text",
)


# ------------------------------------------------------------------ network
def build_gate(seed: int = 0):
    """A small CNN: grey input of any size -> probabilities of PLANES."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((None, None, 1), name="grey")
    x = layers.Resizing(GATE_SIZE, GATE_SIZE, antialias=True)(inputs)
    # Per-slice standardisation: the plane shows in shapes, not in brightness.
    x = layers.LayerNormalization(axis=[1, 2, 3], center=False, scale=False)(x)
    for filters in (16, 32, 64):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        x = layers.ReLU()(x)
        x = layers.MaxPooling2D()(x)
    x = layers.Conv2D(96, 3, padding="same", activation="relu")(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(0.3)(x)
    outputs = layers.Dense(len(PLANES), activation="softmax")(x)
    return keras.Model(inputs, outputs, name="plane_gate")


def set_valued_loss(allowed, probabilities):
    """-log P(the slice is one of the classes its label allows): cross-entropy for one."""
    from keras import ops

    return -ops.log(ops.sum(allowed * probabilities, axis=-1) + 1e-7)


def masks(labels) -> np.ndarray:
    """(N, len(PLANES)) 0/1 rows: the classes each label of ALLOWED allows."""
    return np.array([[p in ALLOWED[label] for p in PLANES] for label in labels], np.float32)


def fit(x, labels, x_val, labels_val, *, epochs: int = 16, seed: int = 0, verbose: int = 2,
        augment: str = GATE_AUGMENT):  # fmt: skip
    """Train the gate on grey inputs (N, S, S, 1) in [0, 1], each class group weighted
    equally, augmented as the classifier is (detector.training.AUGMENTATIONS)."""
    import keras

    from .training import augmented_batches

    gate = build_gate(seed)
    steps = epochs * -(-len(x) // 64)
    schedule = keras.optimizers.schedules.CosineDecay(2e-3, steps)
    gate.compile(optimizer=keras.optimizers.Adam(schedule), loss=set_valued_loss)
    # Val loss swings from epoch to epoch (few val slices of some planes): keep the best.
    best = keras.callbacks.EarlyStopping(patience=epochs, restore_best_weights=True)
    train = augmented_batches(x, masks(labels), _balanced_weights(labels), 64, seed, augment)
    gate.fit(
        train, epochs=epochs,
        validation_data=(x_val, masks(labels_val), _balanced_weights(labels_val)),
        callbacks=[best], verbose=verbose,
    )  # fmt: skip
    return gate


def _balanced_weights(labels) -> np.ndarray:
    """Axial, sagittal/coronal, not MRI: each the same total weight."""
    group = np.array([{"axial": 0, "not MRI": 2}.get(label, 1) for label in labels])
    counts = np.bincount(group, minlength=3).astype(float)
    return (len(group) / (3 * np.maximum(counts, 1)))[group]


def with_features(gate):
    """The gate with two outputs: P(each of PLANES) and its pooled features (the
    input of its last layer), which detector.ood's feature distance reads. For gates
    averaged (models.average_of), the mean P and every member's features side by side."""
    import keras

    from .models import members_of

    members = members_of(gate)
    if len(members) == 1:
        return keras.Model(gate.input, [gate.output, gate.layers[-1].input])
    both = [keras.Model(m.input, [m.output, m.layers[-1].input])(gate.input) for m in members]
    p = keras.layers.Average()([b[0] for b in both])
    return keras.Model(gate.input, [p, keras.layers.Concatenate()([b[1] for b in both])])


def _in_batches(network, x: np.ndarray, batch_size: int) -> list:
    """``network`` (the gate, or with_features of it) on inputs (N, S, S, C) made grey,
    outside the detector's compiled graph: its output for each batch."""
    grey = x.mean(axis=-1, keepdims=True).astype(np.float32)
    starts = range(0, len(x), batch_size)
    return [network(grey[i : i + batch_size], training=False) for i in starts]


def probabilities(gate, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """P(each of PLANES) of inputs (N, S, S, C)."""
    return np.concatenate([p.numpy() for p in _in_batches(gate, x, batch_size)])


def outputs(gate, x: np.ndarray, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """P(each of PLANES) and the pooled features of inputs (N, S, S, C), in one pass."""
    batches = _in_batches(with_features(gate), x, batch_size)
    return tuple(np.concatenate([batch[k].numpy() for batch in batches]) for k in (0, 1))


def features(gate, x: np.ndarray) -> np.ndarray:
    """The gate's pooled features of inputs (N, S, S, C)."""
    return outputs(gate, x)[1]


def named(plane: str, p: dict[str, float]) -> str:
    """What a verdict calls a slice the gate calls ``plane``, given P(each of PLANES):
    the plane, or SAGITTAL_OR_CORONAL when the gate cannot tell which of the two."""
    other = {"sagittal": "coronal", "coronal": "sagittal"}.get(plane)
    if other and p[plane] < SURE_PLANE_RATIO * p[other]:
        return SAGITTAL_OR_CORONAL
    return plane


def verdicts(p: np.ndarray, threshold: float) -> list[str]:
    """The plane of each slice: axial unless 1 - P(axial) > threshold, else the likeliest other."""
    others = np.array(PLANES[1:])[np.argmax(p[:, 1:], axis=1)]
    return [o if 1 - pa > threshold else "axial" for pa, o in zip(p[:, 0], others)]


# ------------------------------------------------------------------ the union's labels
def known_planes(slices) -> list[str]:
    """Each slice's plane: Entry.plane, else HAND_LABELS', else the plane of its
    labelled near-copies (thumbnail correlation >= 0.95) when they all agree."""
    from .data import DUPLICATE_CORRELATION

    hand = hand_labels()
    planes = np.array([p or hand.get(n, "") for p, n in zip(slices.planes, slices.names)], object)
    unknown, labelled = np.flatnonzero(planes == ""), np.flatnonzero(planes != "")
    for start in range(0, len(unknown), 512):
        block = unknown[start : start + 512]
        near = (
            np.maximum(
                slices.thumbnails[block] @ slices.thumbnails[labelled].T,
                slices.crop_thumbnails[block] @ slices.crop_thumbnails[labelled].T,
            )
            >= DUPLICATE_CORRELATION
        )
        for i, row in zip(block, near):
            found = set(planes[labelled[row]])
            if len(found) == 1:
                planes[i] = found.pop()
    return list(planes)


def axial_slices(gate, threshold: float, planes: list[str], x: np.ndarray, index: np.ndarray):
    """The slices of ``index`` that are axial: by their known plane (``planes``, from
    known_planes), else by the gate's verdict (most of figshare and sartaj have no
    plane label). ``x``: every slice as the gate reads it."""
    planes = np.array(planes, object)[index]
    unknown = planes == ""
    if unknown.any():
        planes[unknown] = verdicts(probabilities(gate, x[index[unknown]]), threshold)
    return index[planes == "axial"]


def hand_labels() -> dict[str, str]:
    """HAND_LABELS as slice name -> plane, without the doubtful ones."""
    with HAND_LABELS.open(newline="") as f:
        return {
            f"figshare/{row['path']}": row["view"]
            for row in csv.DictReader(f)
            if row["view"] in ALLOWED
        }


# ------------------------------------------------------------------ training
def fit_plane_gate(slices, split: dict, cfg: PreprocessConfig, sartaj: Path | None, seed: int = 0,
                   max_axial: int = 3000, epochs: int = 16, verbose: int = 2, gate=None,
                   augment: str = GATE_AUGMENT, made_extras=(), members: int = 1) -> GateFit:  # fmt: skip
    """Train the gate on the classifier's split of the union plus the extras, choose
    its threshold on val, and read test once. ``sartaj``: the folder whose
    views.csv lists CT slices (None: no CT examples). ``gate``: a trained gate
    to choose the threshold of and measure again (new hand labels), untrained.
    ``made_extras``: MADE_EXTRAS to learn from as well (tried, not adopted: docs/experiments.md).
    ``members``: gates fitted (seeds seed, seed + 1, ...) and averaged into one."""
    planes = known_planes(slices)
    rng = np.random.default_rng(seed)
    part = {}
    for name, index in split.items():
        index = np.array([i for i in index if planes[i]], int)
        axial = np.array([planes[i] == "axial" for i in index], bool)
        if name == "train" and axial.sum() > max_axial:  # the rest add time, not planes
            index = np.concatenate(
                [index[~axial], rng.choice(index[axial], max_axial, replace=False)]
            )
        part[name] = index
    x = slices.inputs(cfg).mean(axis=-1, keepdims=True)

    def made(which):
        crops, labels, groups, refused = extras(sartaj, which, seed, made_extras)
        grey = np.stack([to_input(c, cfg).mean(axis=-1, keepdims=True) for c in crops])
        return grey, labels, groups, refused, crops

    train, labels_extra = part["train"], []
    if gate is None:
        x_extra, labels_extra, _, _, _ = made("train")
        if "skull-stripped" in made_extras:  # half the train slices again, skull stripped
            half = rng.choice(train, len(train) // 2, replace=False)
            x_extra = np.concatenate([x_extra, skull_stripped(x[half], rng, cfg.letterbox)])
            labels_extra = labels_extra + [planes[i] for i in half]
        from .models import average_of

        gate = average_of([fit(
            np.concatenate([x[train], x_extra]), [planes[i] for i in train] + labels_extra,
            x[part["val"]], [planes[i] for i in part["val"]], epochs=epochs, seed=seed + k,
            verbose=verbose, augment=augment,
        ) for k in range(members)], "plane_gate")  # fmt: skip
    # The feature distance: Gaussians of the gate's own train slices of each MRI plane.
    mri = np.array([i for i in part["train"] if planes[i] in MRI_PLANES], int)
    distance = fit_feature_distance(features(gate, x[mri]), [planes[i] for i in mri])
    # At most 3 % of val's axial slices of the targets' collections flagged (ms/ holds
    # every level down to the skull base: reported, not tuned for); never under
    # DEFAULT_PLANE_THRESHOLD. The distance's threshold: DISTANCE_QUANTILE of the same.
    val_axial = [
        i for i in part["val"] if planes[i] == "axial" and slices.collections[i] in AXIAL_TARGETS
    ]
    not_axial, val_distances = [0.0], [0.0]
    if val_axial:
        p_val, features_val = outputs(gate, x[val_axial])
        not_axial, val_distances = 1 - p_val[:, 0], feature_distances(features_val, distance)
    threshold = float(max(DEFAULT_PLANE_THRESHOLD, np.quantile(not_axial, 0.97)))
    distance_threshold = float(np.quantile(val_distances, DISTANCE_QUANTILE))

    test = part["test"]
    x_test_extra, labels_test_extra, groups_extra, refused, test_crops = made("test")
    labels = [planes[i] for i in test] + labels_test_extra
    groups = [flag_group(slices.collections[i], planes[i]) for i in test] + groups_extra
    x_test = np.concatenate([x[test], x_test_extra])
    p, features_test = outputs(gate, x_test)
    predicted = verdicts(p, threshold)
    far = feature_distances(features_test, distance) > distance_threshold
    # A few test slices of each group, by file name: tests/test_plane.py runs them
    # through the whole pipeline of the saved model.
    examples = {g: [] for g in sorted(set(groups[: len(test)]))}
    for k in rng.permutation(len(test)):
        if len(examples[groups[k]]) < 20:
            examples[groups[k]].append(slices.names[test[k]])
    if sartaj is not None:
        examples["CT"] = [f"sartaj/{p}" for p in ct_paths(sartaj)]
    flagged = np.array([v != "axial" for v in predicted])
    metrics = {
        "threshold": threshold,
        "distance_threshold": distance_threshold,
        "test_examples": examples,
        "train": {"union": len(train), "made": len(labels_extra), "augment": augment,
                  **({"members": members} if members > 1 else {}),
                  **({"made_extras": list(made_extras)} if made_extras else {})},  # fmt: skip
        "confusion": confusion(labels, predicted),
        "naming": naming(labels, predicted, p),
        **flag_table(groups, flagged, refused),
        # The gate's verdict or its feature distance: what the gate's two checks flag.
        "with_distance": flag_table(groups, flagged | far, refused),
    }
    return GateFit(gate, threshold, distance, distance_threshold, metrics, x_test, groups,
                   predicted, far, refused, planes, cfg.letterbox, test, test_crops)  # fmt: skip


class GateFit(NamedTuple):
    gate: object  # the keras model
    threshold: float  # flag when 1 - P(axial) > threshold
    distance: dict  # detector.ood.fit_feature_distance's arrays, for the model's ood.npz
    distance_threshold: float  # flag when the feature distance is over it
    metrics: dict  # confusion matrix, flag rate per test group, the targets
    x_test: np.ndarray  # grey test inputs, the union's then the made ones
    groups: list[str]  # each test input's flag_group
    predicted: list[str]  # the gate's verdict on each
    far: np.ndarray  # each one's feature distance over distance_threshold (bool)
    refused: dict[str, int]  # per group, the made test pictures the brain crop refuses
    known_planes: list[str]  # each slice's known plane, "" where none (known_planes)
    letterbox: bool  # whether the gate reads the crop letterboxed (PreprocessConfig.letterbox)
    test: np.ndarray  # the union's test slices among x_test (first), by index
    made_test_crops: list  # the brain crops of the made test inputs (after them)


# ------------------------------------------------------------------ extras
def template_cuts(rng: np.random.Generator, per_plane: int = 250,
                  skulled: bool = False):  # fmt: skip
    """MNI152 (skull-stripped) ``cuts``, each made to look like an exported JPEG;
    ``skulled``: half of them with a T1 skull and scalp drawn round the brain, the
    layers template_ct_cuts draws in CT's look (MADE_EXTRAS). Returns (uint8 brain
    crops, labels)."""
    from nilearn.datasets import load_mni152_template

    template = load_mni152_template().get_fdata()
    volumes = [(template, per_plane)]
    if skulled:
        _, outside = _template_ct_tissue()
        volumes = [(template, per_plane // 2)] + [
            (_with_skull(template, outside, rng, "T1"), per_plane // 8) for _ in range(4)
        ]
    crops, labels = [], []
    for volume, n in volumes:
        for plane, cut in cuts(volume, rng, n):  # a generator: draws as it goes
            crop = _crop(exported_look(cut, rng))
            if crop is not None:
                crops.append(crop), labels.append(plane)
    return crops, labels


def skull_stripped(x: np.ndarray, rng: np.random.Generator, letterbox: bool = False) -> np.ndarray:
    """Slices (N, S, S, 1) in [0, 1] as a skull-stripped export shows them: the head's
    outer rim (SKULL_RIM of the side: scalp and skull) black, the brain cropped again
    to its own box, as the detector crops. OASIS, BraTS and registered research scans
    come so; with OASIS unseen, the gate called 38 % of its axial slices sagittal or
    coronal. Tried as made extras, not adopted: held out, OASIS fared worse
    (docs/experiments.md). ``letterbox``: the slices' PreprocessConfig.letterbox."""
    side = x.shape[1]
    out = x.copy()
    for k, slice_ in enumerate(x[..., 0]):
        rim = max(1, int(rng.uniform(*SKULL_RIM) * side))
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * rim + 1, 2 * rim + 1))
        brain = cv2.erode(head_mask(slice_), kernel)
        ys, xs = np.nonzero(brain)
        if len(ys) < side:  # too little left to be a brain
            continue
        soft = cv2.GaussianBlur(brain, (0, 0), 1.0)
        crop = (slice_ * soft)[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
        crop = np.round(crop * 255).astype(np.uint8)
        out[k, ..., 0] = resize_square(crop, side, letterbox) / 255
    return out


def cuts(volume: np.ndarray, rng: np.random.Generator, per_plane: int):
    """A RAS volume (x sagittal, y coronal, z axial) cut in each plane at random levels
    through the middle 70 % of the head, anterior or superior at the top: (plane, 2-D cut)
    pairs."""
    floor = 0.1 * volume.max()  # what is head, not background
    for axis, plane in ((2, "axial"), (0, "sagittal"), (1, "coronal")):
        extent = np.flatnonzero(volume.max(axis=tuple(a for a in range(3) if a != axis)) > floor)
        for level in rng.integers(
            extent[0] + 0.15 * len(extent), extent[-1] - 0.15 * len(extent), per_plane
        ):
            yield plane, np.rot90(np.take(volume, level, axis=axis))


def exported_look(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A float MRI slice as someone's exported JPEG: windowed, gamma, maybe T2-like
    inverted tissue contrast, then as_exported."""
    head = image > 0.05 * image.max()
    x = np.clip(image / np.percentile(image[head], rng.uniform(97, 100)), 0, 1) ** rng.uniform(
        0.6, 1.6
    )
    if rng.random() < 0.3:  # T2/FLAIR-like: tissue contrast inverted inside the head
        x = np.where(head, 1.05 - x, 0)
    return as_exported(x, rng)


def as_exported(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A slice in [0, 1] framed, rotated, resized, noisy and JPEG-compressed (uint8)."""
    side = int(rng.integers(160, 320))
    pad = rng.uniform(0.0, 0.25, 4)
    h, w = x.shape
    x = cv2.copyMakeBorder(x, *(int(p * max(h, w)) for p in pad), cv2.BORDER_CONSTANT, value=0)
    centre = (x.shape[1] / 2, x.shape[0] / 2)
    x = cv2.warpAffine(x, cv2.getRotationMatrix2D(centre, rng.uniform(-12, 12), 1.0), x.shape[::-1])
    x = cv2.resize(x, (side, int(side * x.shape[0] / x.shape[1])), interpolation=cv2.INTER_AREA)
    x = x + rng.normal(0, rng.uniform(0, 0.03), x.shape)
    grey = np.clip(np.round(x * 255), 0, 255).astype(np.uint8)
    _, jpeg = cv2.imencode(".jpg", grey, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(50, 96))])
    return cv2.imdecode(jpeg, cv2.IMREAD_GRAYSCALE)


def head_ct_cuts(rng: np.random.Generator, per_plane=(160, 30, 30), path=HEAD_CT):
    """HEAD_CT cut axially, sagittally and coronally at random levels, each under a
    random CT window, exported as a JPEG. Returns (uint8 brain crops, labels: "not MRI")."""
    volume, spacing = read_inv3(path)  # (z, y, x), z from the skull base up
    crops = []
    for axis, n in zip((0, 2, 1), per_plane):  # axial, sagittal, coronal
        # The head's extent along the axis (HU > 0: tissue, bone), less 10 % at each end.
        head = np.flatnonzero((volume > 0).any(axis=tuple(a for a in range(3) if a != axis)))
        lo, hi = head[0], head[-1]
        for level in rng.integers(lo + 0.1 * (hi - lo), hi - 0.1 * (hi - lo), n):
            cut = np.take(volume, level, axis=axis).astype(np.float32)
            if axis == 0:
                cut = cut[::-1]  # anterior at the top, as viewers show it
            else:  # z rows are spacing[2] mm apart, not spacing[0]: stretch, skull base down
                rows = int(cut.shape[0] * spacing[2] / spacing[0])
                cut = cv2.resize(cut, (cut.shape[1], rows))[::-1]
            crop = _exported_ct(cut, rng)
            if crop is not None:
                crops.append(crop)
    return crops, ["not MRI"] * len(crops)


def _exported_ct(hu: np.ndarray, rng: np.random.Generator) -> np.ndarray | None:
    """A CT cut in HU under a random CT window, exported as a JPEG, as the detector crops it."""
    centre, width = CT_WINDOWS[rng.integers(len(CT_WINDOWS))] * rng.uniform(0.8, 1.25, 2)
    return _crop(as_exported(np.clip((hu - centre) / width + 0.5, 0, 1), rng))


def template_ct_cuts(rng: np.random.Generator, per_plane=(160, 30, 30)):
    """CT made from the MNI152 template's tissue maps, cut like head_ct_cuts: every
    template CT has the template's anatomy but its own skull, scalp, noise and window,
    so that the gate learns CT from more than HEAD_CT's one head. Returns (uint8
    crops, labels: "not MRI")."""
    brain, outside = _template_ct_tissue()
    inside = brain > -1000
    crops = []
    for axis, n in zip((2, 0, 1), per_plane):  # axial, sagittal, coronal (RAS)
        extent = np.flatnonzero(inside.any(axis=tuple(a for a in range(3) if a != axis)))
        # The first quarter of the extent left out (axially the skull base, not drawn here).
        lo, hi = extent[0] + 0.25 * len(extent), extent[-1] - 0.1 * len(extent)
        for level in rng.integers(lo, hi, n):
            cut = [np.take(volume, level, axis=axis) for volume in (brain, outside)]
            hu = _with_skull(*cut, rng)
            hu = np.rot90(hu) + rng.normal(0, rng.uniform(2, 6), hu.shape[::-1])  # quantum noise
            hu = cv2.resize(hu, (hu.shape[1], int(hu.shape[0] * rng.uniform(0.85, 1.15))))
            crop = _exported_ct(hu, rng)
            if crop is not None:
                crops.append(crop)
    return crops, ["not MRI"] * len(crops)


@functools.cache  # template_cuts and template_ct_cuts both read it
def _template_ct_tissue() -> tuple[np.ndarray, np.ndarray]:
    """The template brain in Hounsfield units (grey matter 40, white 28, CSF 6; -1000
    outside) and each voxel's distance in mm out from the brain."""
    from nilearn.datasets import (
        load_mni152_brain_mask,
        load_mni152_gm_template,
        load_mni152_wm_template,
    )
    from scipy.ndimage import distance_transform_edt

    mask = load_mni152_brain_mask(resolution=1).get_fdata() > 0.5
    grey = load_mni152_gm_template(resolution=1).get_fdata()
    white = load_mni152_wm_template(resolution=1).get_fdata()
    hu = 40 * grey + 28 * white + 6 * np.clip(1 - grey - white, 0, 1)
    outside = distance_transform_edt(~mask)  # 1 mm voxels
    return np.where(mask, hu, -1000).astype(np.float32), outside.astype(np.float32)


# What the layers round the brain look like (ranges to draw from): CT in HU, T1 MRI in
# the template's 0-1 (CSF and cortical bone dark, marrow and scalp fat bright).
SKULL_LOOKS = {
    "CT": {"csf": (6, 6), "tables": (1200, 2000), "diploe": (400, 900), "scalp": (20, 50)},
    "T1": {"csf": (0.0, 0.05), "tables": (0.0, 0.05), "diploe": (0.3, 0.6), "scalp": (0.6, 1.0)},
}


def _with_skull(brain: np.ndarray, outside: np.ndarray, rng: np.random.Generator,
                look: str = "CT") -> np.ndarray:  # fmt: skip
    """A cut (or volume) of the template brain with a random thin CSF rim, skull (two
    tables, diploe between) and scalp around it, as SKULL_LOOKS[look] shows them."""
    value = {layer: rng.uniform(*span) for layer, span in SKULL_LOOKS[look].items()}
    rim, skull, scalp = rng.uniform(0.5, 2.5), rng.uniform(4, 9), rng.uniform(3, 8)
    depth = (outside - rim) / skull  # 0..1 across the bone
    bone = np.where(np.abs(depth - 0.5) < 0.25, value["diploe"], value["tables"])
    out = np.where((outside > 0) & (depth <= 0), value["csf"], brain)
    out = np.where((depth > 0) & (depth <= 1), bone, out)
    return np.where((depth > 1) & (outside <= rim + skull + scalp), value["scalp"], out)


def read_inv3(path: Path) -> tuple[np.ndarray, tuple[float, float, float]]:
    """An InVesalius project (a tar.gz of plists and raw arrays): its volume and voxel spacing."""
    import plistlib
    import tarfile

    if not Path(path).is_file():
        raise FileNotFoundError(
            f"{path}: the plane gate learns CT from this head CT volume; "
            "install it with `apt-get install invesalius-examples` (Debian)"
        )
    with tarfile.open(path) as tar:
        files = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
        project = plistlib.load(tar.extractfile(files["main.plist"]))
        matrix = project["matrix"]
        raw = tar.extractfile(files[matrix["filename"]]).read()
    volume = np.frombuffer(raw, np.dtype(matrix["dtype"]).newbyteorder("<"))
    return volume.reshape(matrix["shape"]), tuple(project["spacing"])


def pictures(names, rng: np.random.Generator, per_picture: int = 30):
    """scikit-image's pictures, randomly cropped, flipped, turned and maybe inverted.
    Returns (uint8 brain crops, labels, how many variants no brain crop could be made of)."""
    import skimage

    crops, refused = [], 0
    folder = Path(skimage.__file__).parent / "data"
    for name in names:
        path = next(folder.glob(f"{name}.*"))
        grey = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        for _ in range(per_picture):
            crop = _crop(_variant(grey, rng))
            refused += crop is None
            if crop is not None:
                crops.append(crop)
    return crops, ["not MRI"] * len(crops), refused


def documents(n: int, rng: np.random.Generator):
    """Synthetic pages: lines of text and rules, dark on light or light on dark."""
    crops, refused = [], 0
    words = (
        "Patient",
        "report",
        "MRI",
        "brain",
        "findings",
        "0.5 mm",
        "Date",
        "Name",
        "scan",
        "T1",
    )
    for _ in range(n):
        h, w = int(rng.integers(200, 400)), int(rng.integers(200, 400))
        page = np.full((h, w), int(rng.integers(180, 256)), np.uint8)
        for y in range(int(rng.integers(15, 40)), h - 10, int(rng.integers(14, 30))):
            text = " ".join(rng.choice(words, int(rng.integers(2, 8))))
            cv2.putText(page, text, (int(rng.integers(2, 30)), y), int(rng.integers(0, 4)),
                        rng.uniform(0.3, 0.8), int(rng.integers(0, 60)), 1)  # fmt: skip
            if rng.random() < 0.1:
                cv2.line(page, (0, y + 4), (w, y + 4), 0, 1)
        crop = _crop(255 - page if rng.random() < 0.5 else page)
        refused += crop is None
        if crop is not None:
            crops.append(crop)
    return crops, ["not MRI"] * len(crops), refused


def ct_paths(sartaj: Path) -> list[str]:
    """sartaj/views.csv's "ct" rows, in name order: all test (HEAD_CT trains)."""
    with (sartaj / "views.csv").open(newline="") as f:
        return sorted(row["path"] for row in csv.DictReader(f) if row["view"] == "ct")


def ct_slices(sartaj: Path):
    """The CT slices of ct_paths, as the detector crops them."""
    chosen = ct_paths(sartaj)
    crops = [_crop(cv2.imread(str(sartaj / p), cv2.IMREAD_GRAYSCALE)) for p in chosen]
    kept = [c for c in crops if c is not None]
    return kept, ["not MRI"] * len(kept), len(crops) - len(kept)


def _variant(grey: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    h, w = grey.shape
    ch, cw = int(h * rng.uniform(0.5, 1)), int(w * rng.uniform(0.5, 1))
    y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    out = grey[y : y + ch, x : x + cw]
    out = np.rot90(out, int(rng.integers(0, 4)))
    if rng.random() < 0.5:
        out = out[:, ::-1]
    return np.ascontiguousarray(255 - out if rng.random() < 0.3 else out)


def _crop(grey: np.ndarray) -> np.ndarray | None:
    """The brain crop the detector would make; None when it refuses the picture."""
    try:
        return crop_brain(grey, PreprocessConfig())
    except InvalidImageError:
        return None


def extras(sartaj: Path | None, part: str, seed: int = 0, made_extras=()):
    """The made examples of one part ("train" or "test"): (uint8 brain crops, labels, groups,
    refused).

    Template cuts and the head CT (and any ``made_extras``) are train only, sartaj's CT
    slices test only: the targets are measured on real slices, and on CT from another source.
    """
    rng = np.random.default_rng(seed + (part == "test"))
    parts = []
    if part == "train":
        skulled = "skulled-template" in made_extras
        parts.append((*template_cuts(rng, skulled=skulled), 0, "MNI152 template"))
        parts.append((*head_ct_cuts(rng), 0, "CT"))
        if "template-ct" in made_extras:
            parts.append((*template_ct_cuts(rng), 0, "template CT"))
    s, lab, ref = pictures(PICTURES_TRAIN if part == "train" else PICTURES_TEST, rng)
    parts.append((s, lab, ref, "pictures"))
    parts.append((*documents(60 if part == "train" else 40, rng), "documents"))
    if sartaj is not None and part == "test":
        parts.append((*ct_slices(sartaj), "CT"))
    crops, labels, groups, refused = [], [], [], {}
    for s, lab, ref, group in parts:
        crops += s
        labels += lab
        groups += [group] * len(s)
        refused[group] = ref
    return crops, labels, groups, refused


# ------------------------------------------------------------------ evaluation
def confusion(labels, predicted) -> dict[str, dict[str, int]]:
    """Rows: the labels (incl. "sagittal-or-coronal"); columns: PLANES."""
    return {
        label: {
            p: sum(1 for t, q in zip(labels, predicted) if t == label and q == p) for p in PLANES
        }
        for label in ALLOWED
        if label in labels
    }


def naming(labels, predicted, p: np.ndarray) -> dict[str, int]:
    """Of the test slices labelled sagittal or coronal that the gate calls one of the two:
    how many a verdict (``named``) names right, calls SAGITTAL_OR_CORONAL, names wrong."""
    counts = {"right": 0, SAGITTAL_OR_CORONAL: 0, "wrong": 0}
    for label, verdict, row in zip(labels, predicted, p):
        if label in ("sagittal", "coronal") and verdict in ("sagittal", "coronal"):
            name = named(verdict, dict(zip(PLANES, row)))
            if name == SAGITTAL_OR_CORONAL:
                counts[name] += 1
            else:
                counts["right" if name == label else "wrong"] += 1
    return counts


# The collections whose axial slices the axial target is measured on.
AXIAL_TARGETS = ("br35h", "sartaj", "figshare")
# Each target: (what, which test groups, the flag rate it must reach; "max" for axial).
TARGETS = (
    ("sagittal and coronal MRI flagged", ("sagittal/coronal",), ">=", 0.95),
    ("CT and non-MRI pictures flagged", ("CT", "pictures", "documents"), ">=", 0.95),
    ("axial MRI flagged (Br35H, sartaj, figshare)", tuple(f"axial {c}" for c in AXIAL_TARGETS), "<=", 0.03),
)  # fmt: skip


def flag_table(groups, flagged, refused: dict[str, int]) -> dict:
    """Per test group and per target: n, flagged (a picture the crop refuses counts as flagged)."""
    groups, flagged = np.array(groups), np.asarray(flagged, bool)
    rows = {}
    for g in sorted(set(groups) | set(refused)):
        n_refused = refused.get(g, 0)
        n = int((groups == g).sum()) + n_refused
        rows[g] = {"n": n, "flagged": int(flagged[groups == g].sum()) + n_refused}
    targets = []
    for what, members, op, goal in TARGETS:
        n = sum(rows.get(g, {"n": 0})["n"] for g in members)
        k = sum(rows.get(g, {"flagged": 0})["flagged"] for g in members)
        rate = k / n if n else None
        # None: nothing of the kind in this test split (a held-out run's, say)
        met = None if rate is None else bool(rate >= goal if op == ">=" else rate <= goal)
        targets.append(
            {"target": f"{what} {op} {goal:.0%}", "n": n, "flagged": k, "rate": rate, "met": met}
        )
    return {"groups": rows, "targets": targets}


def flag_group(collection: str, label: str) -> str:
    return (
        "sagittal/coronal"
        if label in ("sagittal", "coronal", "sagittal-or-coronal")
        else (f"{label} {collection}" if label == "axial" else label)
    )


def format_report(metrics: dict) -> str:
    lines = [f"Flag when 1 - P(axial) > {metrics['threshold']:.3f} (chosen on val)"]
    if metrics.get("train", {}).get("members", 1) > 1:
        lines[0] += f"; {metrics['train']['members']} gates averaged"
    lines.append("Confusion matrix (test; rows: label, columns: the gate's verdict)")
    lines.append(f"{'':<22}" + "".join(f"{p:>10}" for p in PLANES))
    for label, row in metrics["confusion"].items():
        lines.append(f"{label:<22}" + "".join(f"{row[p]:>10}" for p in PLANES))
    if "naming" in metrics:  # gates measured before it have none
        n = max(sum(metrics["naming"].values()), 1)
        lines.append(
            f"Named, of the {n} test slices labelled and called sagittal or coronal: "
            + ", ".join(f'{k} {v / n:.1%}' for k, v in metrics["naming"].items())
        )
    lines.append(f"\n{'test group':<22}{'n':>6}{'flagged':>9}{'rate':>8}")
    for g, row in metrics["groups"].items():
        lines.append(
            f"{g:<22}{row['n']:>6}{row['flagged']:>9}{row['flagged'] / max(row['n'], 1):>8.1%}"
        )
    lines.append(f"\n{'target':<52}{'n':>6}{'rate':>8}  met")
    lines += _target_lines(metrics["targets"])
    if "with_distance" in metrics:  # gates measured before the feature distance have none
        lines.append(
            f"\nThe gate's verdict or its feature distance over {metrics['distance_threshold']:.4g}"
            " (chosen on val):"
        )
        lines += _target_lines(metrics["with_distance"]["targets"])
    if "whole_detector" in metrics:  # set by record(), once the gate is in a detector
        lines.append("\nThe whole detector, all its checks (grey inputs, so not the colour rule):")
        lines += _target_lines(metrics["whole_detector"]["targets"])
    return "\n".join(lines)


def _target_lines(targets: list[dict]) -> list[str]:
    lines = []
    for t in targets:
        rate = "-" if t["rate"] is None else f"{t['rate']:.1%}"
        met = {True: "yes", False: "NO", None: "-"}[t["met"]]
        lines.append(f"{t['target']:<52}{t['n']:>6}{rate:>8}  {met}")
    return lines


def format_old_checks(table: dict) -> str:
    """Per test group and older check: "flags / of them the gate misses"."""
    names = list(next(iter(table.values())))
    lines = [f"{'older check (flags / gate misses)':<34}" + "".join(f"{n[:16]:>18}" for n in names)]
    for g, row in table.items():
        cells = "".join(f"{row[n]['flags']:>11} / {row[n]['flags_gate_misses']:<4}" for n in names)
        lines.append(f"{g:<34}{cells}")
    return "\n".join(lines)


def plot_confusion(metrics: dict) -> bytes:
    """The confusion matrix as a PNG (a model-directory asset)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(metrics["confusion"])
    counts = np.array([[metrics["confusion"][r][p] for p in PLANES] for r in rows])
    fig, ax = plt.subplots(figsize=(6, 0.6 * len(rows) + 1.5))
    ax.imshow(counts / np.maximum(counts.sum(1, keepdims=True), 1), cmap="Blues", vmin=0, vmax=1)
    for (i, j), c in np.ndenumerate(counts):
        ax.text(j, i, str(c), ha="center", va="center")
    ax.set_xticks(range(len(PLANES)), PLANES)
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel("plane gate")
    ax.set_title("Plane gate, test split")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def older_checks(detector, x: np.ndarray, x_gate: np.ndarray) -> dict[str, np.ndarray]:
    """Where each check of detector.ood that does not read the gate fires on the
    gate's test inputs (``x``: as the classifier reads them; ``x_gate``: as the gate
    does), and "any older check"."""
    # Grey inputs: chroma 0, so the colour rule cannot fire here.
    _, scores = detector.predict_arrays(x, x_gate=x_gate)
    failed = failed_checks(scores, detector.config)
    failed = {name: hit for name, hit in failed.items() if name not in GATE_CHECKS}
    failed["any older check"] = np.any(list(failed.values()), axis=0)
    return failed


def old_checks_table(failed: dict[str, np.ndarray], groups, gate_flags) -> dict:
    """Per test group: what each of ``older_checks`` flags, and what it flags that
    the gate misses (is each still worth keeping?). ``gate_flags``: the gate's
    verdict or its feature distance."""
    groups, gate_flags = np.array(groups), np.asarray(gate_flags, bool)
    table = {}
    for g in sorted(set(groups)):
        members = groups == g
        table[g] = {
            name: {
                "flags": int(hit[members].sum()),
                "flags_gate_misses": int((hit & ~gate_flags)[members].sum()),
            }
            for name, hit in failed.items()
        }
    return table


GATE_CHECKS = ("not_axial", "gate_distance")  # detector.ood's checks that read the gate


def sartaj_folder(roots) -> Path | None:
    """The sartaj collection among the data folders, whose views.csv names CT slices."""
    return next((Path(r) for r in roots if Path(r).name.lower() == "sartaj"), None)


def install(detector, fitted: GateFit) -> None:
    """Put a fitted gate into a detector, with its two thresholds (chosen on val), its
    feature Gaussians and how it reads the crop: the detector then predicts and flags
    through it."""
    detector.config["gate_letterbox"] = fitted.letterbox
    detector.plane_gate = fitted.gate
    detector.config["plane_threshold"] = fitted.threshold
    detector.config["gate_distance_threshold"] = fitted.distance_threshold
    detector.ood.update(fitted.distance)


def record(detector, fitted: GateFit, x: np.ndarray) -> None:
    """Put an installed gate's metrics into a detector (with what the older checks
    still catch that it misses, and what the whole detector flags), and its
    confusion-matrix plot. ``x``: the classifier's inputs of every slice of the union."""
    flags = np.array([v != "axial" for v in fitted.predicted]) | fitted.far
    made = [to_input(c, detector.preprocess_config) for c in fitted.made_test_crops]
    older = older_checks(detector, np.concatenate([x[fitted.test], made]), fitted.x_test)
    fitted.metrics["old_checks"] = old_checks_table(older, fitted.groups, flags)
    fitted.metrics["whole_detector"] = flag_table(
        fitted.groups, flags | older["any older check"], fitted.refused
    )
    detector.config.setdefault("metrics", {})["plane_gate"] = fitted.metrics
    detector.assets["plane_gate.png"] = plot_confusion(fitted.metrics)
