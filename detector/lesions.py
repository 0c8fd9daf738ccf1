"""Synthetic tumours: healthy training slices with a tumour-like lesion painted in.

Why: with a collection held out, the detector's tumours are nearly all T1
post-contrast (sartaj, figshare) while its FLAIR, T2 and plain T1 slices are
all healthy (ms, OASIS), so "which sequence" predicts "which class". Painting
lesions into those healthy slices gives every sequence tumours, and pairs of
the same brain with and without one (train.py --synthetic-tumours).

The other way round, plaque mimics (train.py --plaque-mimics): healthy slices
with a few small bright foci painted in, as multiple-sclerosis plaques and
white-matter spots look on FLAIR and T2, kept *normal*. Painted tumours alone
taught "a bright spot is a tumour", and held out, ms's plaque-bearing healthy
slices were called tumour more often (docs/experiments.md); the mimics say that size decides.

A lesion is an irregular blob inside the head, in one of three looks seen on
real scans: bright (a mass on T2/FLAIR, an enhancing meningioma or pituitary
tumour on T1 post-contrast), dark (a mass on plain T1) or a ring (an enhancing
rim round a dark necrotic core, as gliomas show after contrast); often with a
halo of oedema and with the tissue round it pushed aside (mass effect).
"""

from __future__ import annotations

import cv2
import numpy as np

LOOKS = ("bright", "dark", "ring")
LOOK_ODDS = (0.45, 0.2, 0.35)
# Of the slice's side: about 2-5 cm across in a 64 px brain crop, clearly larger
# than a plaque (the first screens' 0.05-0.18 went down to 1.5 cm: docs/experiments.md).
RADIUS = (0.08, 0.2)
PLAQUE_RADIUS = (0.012, 0.035)  # of the side: about 3-10 mm across, as MS plaques are
PLAQUES = (2, 10)  # foci on one slice, at least and at most
HEAD_LEVEL = 0.08  # pixels above this (inputs in [0, 1]) are head, not background


def with_synthetic_tumours(
    x, y, share: float, seed: int, radius_range: tuple[float, float] = RADIUS
):
    """(x, y) plus ``share`` times as many synthetic tumours as it has real ones: healthy
    slices, drawn at random, each at most once, with a lesion painted in, its
    radius drawn from ``radius_range`` (of the slice's side);
    -> (x, y, the healthy slice each new one came from).

    A share of the tumours, not of the healthy slices: with sartaj held out, half
    the healthy slices outnumbered the real tumours 1.7 to 1, and one seed of
    two then learnt the painted lesions instead of the real ones (docs/experiments.md).
    """
    rng = np.random.default_rng(seed)
    return _with_painted(x, y, share, rng, lambda s: paint_lesion(s, rng, radius_range), label=1)


def with_plaque_mimics(x, y, share: float, seed: int):
    """(x, y) plus ``share`` times as many plaque mimics as it has tumours (painted
    ones included, when called after with_synthetic_tumours): healthy slices,
    drawn at random, each at most once, with small bright foci painted in,
    labelled normal; -> (x, y, the healthy slice each new one came from)."""
    rng = np.random.default_rng([seed, 1])  # not the tumours' draw: other hosts
    return _with_painted(x, y, share, rng, lambda s: paint_plaques(s, rng), label=0)


# What each training slice gets painted anew at every epoch (train.py --fresh-lesions).
AS_IT_IS, TUMOUR, PLAQUES_MIMIC = 0, 1, 2


def fresh_painter(seed: int, radius_range: tuple[float, float] = RADIUS):
    """-> paint(slice, kind): a new lesion (TUMOUR) or new foci (PLAQUES_MIMIC) at every
    call, the slice as it is for AS_IT_IS.

    Painted once, the same ~4,000 painted slices are seen at every epoch and can be
    learnt by heart; painted at every epoch, each host shows a new lesion each time.
    """
    rng = np.random.default_rng([seed, 2])  # neither the hosts' draw nor the first paint's

    def paint(slice_: np.ndarray, kind: int) -> np.ndarray:
        if kind == TUMOUR:
            return paint_lesion(slice_, rng, radius_range)
        if kind == PLAQUES_MIMIC:
            return paint_plaques(slice_, rng)
        return slice_

    return paint


def _with_painted(x, y, share: float, rng, paint, label: int):
    """(x, y) plus ``paint`` applied to share x (number of tumours) healthy slices,
    labelled ``label``; -> (x, y, the healthy slice each new one came from)."""
    normals = np.flatnonzero(y == 0)
    wanted = min(round(share * np.sum(y == 1)), len(normals))
    hosts = rng.choice(normals, size=wanted, replace=False)
    if not len(hosts):  # nothing to paint (the report's recipe): x as it is, not a copy
        return x, y, hosts
    painted = np.stack([paint(x[i]) for i in hosts])
    labels = np.full(len(hosts), label, dtype=y.dtype)
    return np.concatenate([x, painted]), np.concatenate([y, labels]), hosts


def paint_plaques(slice_: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One slice (S, S, C) in [0, 1] -> the same slice with a few small bright foci
    in the brain's inner part (where white matter is), none larger than PLAQUE_RADIUS."""
    grey = slice_[..., 0].astype(np.float32)
    side = grey.shape[0]
    head = head_mask(grey)
    # borderValue 0: the frame's edge counts as outside, so that a head filling
    # the crop is eroded there too
    margin = np.ones((side // 4, side // 4), np.uint8)
    inner = cv2.erode(head.astype(np.uint8), margin, borderValue=0)
    ys, xs = np.nonzero(inner)
    if len(ys) == 0:  # too small or empty: nowhere to paint
        return slice_.copy()
    for centre in _apart(np.stack([xs, ys], 1), rng.integers(*PLAQUES, endpoint=True), side, rng):
        focus = _blob(side, centre, max(rng.uniform(*PLAQUE_RADIUS) * side, 0.6), rng)
        grey = _blend(grey, np.full_like(grey, rng.uniform(0.7, 1.0)), focus)
    grey = np.clip(grey * head, 0.0, 1.0)
    return np.repeat(grey[..., None], slice_.shape[-1], axis=-1).astype(slice_.dtype)


def _apart(points: np.ndarray, count: int, side: int, rng) -> list[np.ndarray]:
    """Up to ``count`` of ``points`` (x, y), drawn at random, no two so close that
    their foci would merge into one tumour-sized blob."""
    gap = 2 * PLAQUE_RADIUS[1] * side + 2
    chosen: list[np.ndarray] = []
    for point in points[rng.permutation(len(points))].astype(np.float32):
        if all(np.hypot(*(point - other)) >= gap for other in chosen):
            chosen.append(point)
            if len(chosen) == count:
                break
    return chosen


def paint_lesion(
    slice_: np.ndarray, rng: np.random.Generator, radius_range: tuple[float, float] = RADIUS
) -> np.ndarray:
    """One slice (S, S, C) in [0, 1] -> the same slice with one lesion in it."""
    grey = slice_[..., 0].astype(np.float32)
    side = grey.shape[0]
    head, centre = _head_and_centre(grey, rng)
    if centre is None:  # an empty slice: nowhere to paint
        return slice_.copy()
    radius = rng.uniform(*radius_range) * side
    tissue = float(np.median(grey[head > 0]))

    if rng.random() < 0.5:
        grey = _push_aside(grey, centre, radius, rng.uniform(0.15, 0.4))
    look = rng.choice(LOOKS, p=LOOK_ODDS)
    core = _blob(side, centre, radius, rng)
    if rng.random() < 0.5:  # oedema: brighter on T2/FLAIR, darker on T1
        halo = _blob(side, centre, radius * rng.uniform(1.4, 2.2), rng)
        swell = rng.uniform(1.2, 1.6) if look == "bright" else rng.uniform(0.6, 0.85)
        grey = _blend(grey, grey * swell, halo)
    if look == "bright":
        grey = _blend(grey, rng.uniform(0.75, 1.0) * _texture(side, rng), core)
    elif look == "dark":
        grey = _blend(grey, tissue * rng.uniform(0.2, 0.6) * _texture(side, rng), core)
    else:
        grey = _blend(grey, rng.uniform(0.75, 1.0) * _texture(side, rng), core)
        necrosis = _blob(side, centre, radius * rng.uniform(0.4, 0.7), rng)
        grey = _blend(grey, tissue * rng.uniform(0.2, 0.6) * _texture(side, rng), necrosis)
    grey = np.clip(grey * head, 0.0, 1.0)  # the background stays black
    return np.repeat(grey[..., None], slice_.shape[-1], axis=-1).astype(slice_.dtype)


def with_pasted_tumours(x, y, donors: np.ndarray, boxes: np.ndarray, share: float, seed: int):
    """(x, y) plus ``share`` times as many pasted tumours as it has real ones: healthy
    slices, each at most once, with a real tumour cut from one of ``donors`` (slices
    of x with a tumour box, ``boxes``: (x0, y0, x1, y1) as fractions of the input)
    pasted in, labelled tumour; -> (x, y, the healthy slice each new one came from).

    Why: figshare's tumours are all T1 post-contrast and all tumours; pasted into
    ms's and OASIS's healthy FLAIR and T1 slices, the same tumours appear on every
    sequence and collection, so neither can stand for the label (copy-paste
    augmentation, Ghiasi et al. 2021).
    """
    rng = np.random.default_rng([seed, 3])  # not the painted tumours' nor the mimics' draw
    if not len(donors):
        return x, y, np.array([], int)
    def paste(slice_):
        k = int(rng.integers(len(donors)))
        return paste_tumour(slice_, x[donors[k]], boxes[k], rng)

    return _with_painted(x, y, share, rng, paste, label=1)


def paste_tumour(host: np.ndarray, donor: np.ndarray, box, rng: np.random.Generator) -> np.ndarray:
    """One healthy slice (S, S, C) in [0, 1] with the tumour in ``box`` of ``donor`` pasted
    at a random place inside its head, resized by up to a quarter, its brightness
    matched to the host's tissue and, one time in four, its contrast inverted
    (a mass dark on T1 that is bright after contrast)."""
    grey, source = host[..., 0].astype(np.float32), donor[..., 0].astype(np.float32)
    side = grey.shape[0]
    # At least 2 px each way, inside the slice: a box can sit on the crop's edge.
    x0, y0 = np.clip((np.asarray(box[:2]) * side).round().astype(int), 0, side - 2)
    x1, y1 = np.maximum((np.asarray(box[2:]) * side).round().astype(int), (x0 + 2, y0 + 2))
    patch = source[y0:y1, x0:x1]
    scale = rng.uniform(0.8, 1.25)
    height, width = (min(max(2, round(n * scale)), side // 2) for n in patch.shape)
    patch = cv2.resize(patch, (width, height), interpolation=cv2.INTER_LINEAR)
    head, centre = _head_and_centre(grey, rng)
    if centre is None:  # an empty slice: nowhere to paste
        return host.copy()
    top = int(np.clip(centre[1] - height // 2, 0, side - height))
    left = int(np.clip(centre[0] - width // 2, 0, side - width))
    donor_head = source[source > HEAD_LEVEL]
    donor_tissue = float(np.median(donor_head)) if donor_head.size else 1.0
    tissue = float(np.median(grey[head > 0]))
    patch = patch * tissue / max(donor_tissue, 1e-3)
    if rng.random() < 0.25:
        patch = np.clip(2 * tissue - patch, 0.0, None)
    # A soft ellipse filling the box: the tumour's surroundings fade into the host's.
    mask = np.zeros((height, width), np.float32)
    cv2.ellipse(mask, (width // 2, height // 2), (max(1, width // 2), max(1, height // 2)),
                0, 0, 360, 1.0, -1)  # fmt: skip
    mask = cv2.GaussianBlur(mask, (0, 0), max(1.0, min(height, width) / 8))
    window = (slice(top, top + height), slice(left, left + width))
    grey[window] = _blend(grey[window], patch, mask)
    grey = np.clip(grey * head, 0.0, 1.0)
    return np.repeat(grey[..., None], host.shape[-1], axis=-1).astype(host.dtype)


def _head_and_centre(grey: np.ndarray, rng: np.random.Generator):
    """-> (head_mask, a random point (x, y) well inside the head, or None for an empty slice)."""
    side = grey.shape[0]
    head = head_mask(grey)
    inner = cv2.erode(head.astype(np.uint8), np.ones((side // 6, side // 6), np.uint8))
    ys, xs = np.nonzero(inner) if inner.any() else np.nonzero(head)
    if len(ys) == 0:
        return head, None
    k = rng.integers(len(ys))
    return head, np.array([xs[k], ys[k]], np.float32)


def head_mask(grey) -> np.ndarray:
    """The head's outline filled (dark CSF and necrosis inside it included), 0/1 float."""
    contours, _ = cv2.findContours(
        (grey > HEAD_LEVEL).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
    )
    head = np.zeros(grey.shape, np.uint8)
    if contours:
        cv2.drawContours(head, [max(contours, key=cv2.contourArea)], -1, 1, thickness=-1)
    return head.astype(np.float32)


def _blob(side: int, centre, radius: float, rng) -> np.ndarray:
    """A soft mask in [0, 1]: an ellipse of about ``radius``, turned at random, its
    outline wavy (a few random harmonics), its edge 1-2 px soft."""
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32)
    turn = rng.uniform(0, np.pi)
    u = (xx - centre[0]) * np.cos(turn) + (yy - centre[1]) * np.sin(turn)
    v = -(xx - centre[0]) * np.sin(turn) + (yy - centre[1]) * np.cos(turn)
    aspect = rng.uniform(0.7, 1.3)
    distance = np.hypot(u * aspect, v / aspect)
    angle = np.arctan2(v, u)
    outline = radius * (1 + sum(
        rng.uniform(0, 0.12) * np.cos(k * angle + rng.uniform(0, 2 * np.pi)) for k in (2, 3, 4, 5)
    ))  # fmt: skip
    return np.clip((outline - distance) / rng.uniform(1.0, 2.0) + 0.5, 0.0, 1.0)


def _blend(grey, value, mask):
    return grey * (1 - mask) + value * mask


def _texture(side: int, rng) -> np.ndarray:
    """A multiplicative texture around 1, coarse and fine: tumours are not flat."""
    texture = np.ones((side, side), np.float32)
    for cells, most in ((6, 0.25), (side // 4, 0.15)):
        noise = rng.normal(0, 1, (cells, cells)).astype(np.float32)
        noise = cv2.resize(noise, (side, side), interpolation=cv2.INTER_CUBIC)
        texture += rng.uniform(0, most) * noise
    return texture


def _push_aside(grey, centre, radius: float, strength: float) -> np.ndarray:
    """Mass effect: the tissue round ``centre`` pushed outwards, most near it."""
    side = grey.shape[0]
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32)
    dx, dy = xx - centre[0], yy - centre[1]
    # each pixel takes its value from nearer the centre: the tissue there swells
    pull = strength * np.exp(-(dx**2 + dy**2) / (2 * (1.5 * radius) ** 2))
    return cv2.remap(grey, xx - pull * dx, yy - pull * dy, cv2.INTER_LINEAR, borderValue=0.0)
