"""Fitting the two networks: augmentation, checkpoint selection on val, seeds."""

from __future__ import annotations

import keras
import numpy as np
from keras import layers

from .models import average_of, build_autoencoder, build_classifier, build_type_classifier

# none < geometric < full (+ scanner look) < sequence (+ another sequence's tissue contrast);
# texture: full + random convolutions (random_texture)
AUGMENTATIONS = ("none", "geometric", "full", "sequence", "texture")


def augmenter(seed: int) -> keras.Sequential:
    """Label-preserving changes an MRI slice plausibly undergoes.

    Left-right flips (tumours occur on either side), small rotations, zoom and
    shifts (crop jitter), and contrast/brightness (scanners and windowing differ).
    """
    return keras.Sequential(
        [
            layers.RandomFlip("horizontal", seed=seed),
            layers.RandomRotation(0.04, fill_mode="constant", seed=seed),
            layers.RandomZoom(0.1, fill_mode="constant", seed=seed),
            layers.RandomTranslation(0.05, 0.05, fill_mode="constant", seed=seed),
            layers.RandomContrast(0.2, value_range=(0, 1), seed=seed),
            layers.RandomBrightness(0.1, value_range=(0, 1), seed=seed),
        ],
        name="augment",
    )


def scanner_look(x, seed: int):
    """What another scanner, sequence or export does to the same brain, on a batch in [0, 1].

    Gamma (T1 vs T2 vs FLAIR tissue contrast), a smooth multiplicative bias
    field (coil inhomogeneity), blur by down-then-up sampling (lower
    resolution, JPEG thumbnails) and Gaussian noise. Dim FLAIR slices and
    bright T1 slices of other collections were what the Br35H model got wrong.
    """
    import tensorflow as tf

    batch, side = tf.shape(x)[0], tf.shape(x)[1]
    gamma = tf.exp(tf.random.uniform([batch, 1, 1, 1], -0.5, 0.5, seed=seed))
    x = tf.pow(tf.maximum(x, 1e-6), gamma)
    coarse = tf.random.normal([batch, 4, 4, 1], seed=seed + 1)
    strength = tf.random.uniform([batch, 1, 1, 1], 0.0, 0.3, seed=seed + 2)
    x = x * tf.exp(strength * tf.image.resize(coarse, [side, side], method="bilinear"))
    low = tf.cast(
        tf.cast(side, tf.float32) * tf.random.uniform([], 0.5, 1.0, seed=seed + 3), tf.int32
    )
    x = tf.image.resize(
        tf.image.resize(x, [low, low], method="area"), [side, side], method="bilinear"
    )
    sigma = tf.random.uniform([batch, 1, 1, 1], 0.0, 0.05, seed=seed + 4)
    x = x + sigma * tf.random.normal(tf.shape(x), seed=seed + 5)
    return tf.clip_by_value(x, 0.0, 1.0)


def sequence_look(x, seed: int, knots: int = 6, share: float = 0.5):
    """Another MRI sequence's tissue contrast, on a batch in [0, 1]: a random
    intensity curve per slice, for a ``share`` of the slices.

    T1, T2, FLAIR and post-contrast slices of one brain differ in *which*
    tissue is bright (CSF is dark on T1 and FLAIR, bright on T2), not only in
    gamma, so a monotone curve cannot turn one into another. The curve is
    piecewise linear through ``knots`` random levels, mixed with the slice's
    own contrast in a random proportion; the background stays black. For the
    classifier, screened on held-out collections and not adopted: more tumours
    found, more healthy slices called tumour, AUROC no better (docs/experiments.md). The
    plane gate trains with it (plane.GATE_AUGMENT).
    """
    import tensorflow as tf

    shape = tf.shape(x)
    batch = shape[0]
    levels = tf.random.uniform([batch, knots], 0.0, 1.0, seed=seed + 6)
    levels = tf.concat([tf.zeros([batch, 1]), levels], axis=1)  # level at 0, 1/knots, ..., 1
    t = tf.reshape(tf.clip_by_value(x, 0.0, 1.0), [batch, -1]) * knots
    left = tf.minimum(tf.floor(t), knots - 1)  # the knot at or below each pixel
    knot = tf.cast(left, tf.int32)
    below = tf.gather(levels, knot, batch_dims=1)
    above = tf.gather(levels, knot + 1, batch_dims=1)
    flat = t / knots
    curved = below + (t - left) * (above - below)
    own = tf.random.uniform([batch, 1], 0.0, 1.0, seed=seed + 7)  # its own contrast's share
    curved = own * flat + (1.0 - own) * curved
    curved *= tf.minimum(flat / 0.05, 1.0)  # the background (below 5 %) stays black
    curved /= tf.maximum(tf.reduce_max(curved, axis=1, keepdims=True), 1e-3)  # brightest -> 1
    chosen = tf.random.uniform([batch, 1], seed=seed + 8) < share
    return tf.reshape(tf.where(chosen, curved, flat), shape)


def random_texture(x, seed: int, depth: int = 4, width: int = 4, share: float = 0.5):
    """Another scanner's texture and contrast, on a batch in [0, 1]: the slices
    passed through a shallow network of random 3x3 convolutions, mixed with
    themselves in a random proportion, for a ``share`` of the slices.

    GIN (global intensity non-linear augmentation, Ouyang et al. 2021): random
    convolutions change local texture and which tissue is bright while keeping
    shapes, what carried segmentation across CT and MRI there. sequence_look
    changes grey levels alone. New weights every batch; the background stays black.
    Screened on held-out collections and not adopted: sartaj gained what Br35H
    lost (docs/experiments.md).
    """
    import tensorflow as tf

    shape = tf.shape(x)
    h, channels = x, x.shape[-1]
    for layer in range(depth):
        out = channels if layer == depth - 1 else width
        kernel = tf.random.normal([3, 3, h.shape[-1], out], seed=seed + 10 + layer)
        h = tf.nn.conv2d(h, kernel / (3.0 * h.shape[-1] ** 0.5), 1, "SAME")
        h += tf.random.normal([out], stddev=0.1, seed=seed + 20 + layer)
        if layer < depth - 1:
            h = tf.nn.leaky_relu(h, 0.2)
    head = tf.cast(x > 0.05, x.dtype)
    low = tf.reduce_min(h + (1.0 - head) * 1e6, axis=[1, 2, 3], keepdims=True)
    high = tf.reduce_max(h - (1.0 - head) * 1e6, axis=[1, 2, 3], keepdims=True)
    h = (h - low) / tf.maximum(high - low, 1e-3) * head  # the head spans [0, 1]
    own = tf.random.uniform([shape[0], 1, 1, 1], 0.0, 1.0, seed=seed + 30)
    mixed = own * x + (1.0 - own) * h
    chosen = tf.random.uniform([shape[0], 1, 1, 1], seed=seed + 31) < share
    return tf.clip_by_value(tf.where(chosen, mixed, x), 0.0, 1.0)


def augmented_batches(x, y, weights, batch_size: int, seed: int, augment: str, repaint=None):
    """Shuffled, batched (slices, targets, loss weights), the slices augmented.

    ``repaint`` = (kinds, paint): each slice i is paint(x[i], kinds[i]) anew at every
    epoch, before the augmentation (lesions.fresh_painter).
    """
    import tensorflow as tf

    if augment not in AUGMENTATIONS:
        raise ValueError(f"Unknown augmentation {augment!r}; choose one of {AUGMENTATIONS}.")
    columns = (x, y, weights) if repaint is None else (x, y, weights, repaint[0])
    data = tf.data.Dataset.from_tensor_slices(columns).shuffle(len(x), seed=seed)
    if repaint is not None:
        paint = repaint[1]
        data = data.map(
            lambda a, b, w, k: (_painted(a, k, paint), b, w), num_parallel_calls=tf.data.AUTOTUNE
        )
    data = data.batch(batch_size)
    steps = []
    if augment != "none":
        geometric = augmenter(seed)
        steps.append(lambda a: geometric(a, training=True))
    if augment == "sequence":
        steps.append(lambda a: sequence_look(a, seed))
    if augment == "texture":
        steps.append(lambda a: random_texture(a, seed))
    if augment in ("full", "sequence", "texture"):
        steps.append(lambda a: scanner_look(a, seed))
    for step in steps:
        data = data.map(
            lambda a, b, w, step=step: (step(a), b, w), num_parallel_calls=tf.data.AUTOTUNE
        )
    return data.prefetch(tf.data.AUTOTUNE)


def _painted(slice_, kind, paint):
    """paint(slice_, kind) inside tf.data (numpy and OpenCV code)."""
    import tensorflow as tf

    out = tf.numpy_function(lambda a, k: paint(a, int(k)).astype("float32"), [slice_, kind], tf.float32)
    return tf.ensure_shape(out, slice_.shape)


def fit_classifier(
    arch: str,
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    *,
    epochs: int,
    select_on_val: bool,
    collections: tuple[np.ndarray, np.ndarray] | None = None,
    asymmetry: bool = False,
    mix_style: bool = False,
    **fit,
) -> tuple[keras.Model, dict]:
    """Train a tumour/normal classifier; keep the epoch with the lowest val loss if
    select_on_val. ``collections`` (train's, val's): weigh the collections equally
    within each class (balanced_weights). ``asymmetry``, ``mix_style``: see
    models.build_classifier.
    ``fit``: batch_size, seed, augment, verbose, repaint (see _fit).
    """
    keras.utils.set_random_seed(fit["seed"])
    x = train[0]
    model = build_classifier(
        arch, x.shape[1], x.shape[3], steps=_steps(len(x), epochs, fit["batch_size"]),
        asymmetry=asymmetry, mix_style=mix_style,
    )  # fmt: skip
    as_float = lambda labels: labels.astype("float32")
    return _fit(
        model, train, val, as_float, epochs=epochs, select_on_val=select_on_val,
        collections=collections, **fit,
    )  # fmt: skip


# How fit_type_classifier makes its members: "seeds", each a fit of its own (seed,
# seed + 1, ...); "snapshots", one fit whose learning rate restarts, each cycle's
# best val epoch a member (Huang et al. 2017), for the cost of one network.
ENSEMBLES = ("seeds", "snapshots")


def fit_type_classifier(
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    *,
    classes: int,
    epochs: int,
    members: int = 1,
    ensemble: str = "seeds",
    **fit,
) -> tuple[keras.Model, list[dict]]:
    """Train the tumour-type network on tumour slices (y: type indices); keep the
    epoch with the lowest val loss. ``fit``: batch_size, seed, augment, verbose.

    ``members`` > 1: that many networks, made as ``ensemble`` says (ENSEMBLES),
    their probabilities averaged in one model (models.average_of): on figshare's
    patient folds two seeds score 0.924 and two snapshots 0.912, one network 0.909
    (README). Snapshots share the ``epochs`` between them. Returns the model and each member's history.
    """
    check_ensemble(ensemble, members, epochs)
    one_hot = lambda types: np.eye(classes, dtype="float32")[types]
    build = lambda cycles=1: build_type_classifier(
        train[0].shape[1], train[0].shape[3], classes,
        steps=_steps(len(train[0]), epochs, fit["batch_size"]), cycles=cycles,
    )  # fmt: skip
    if ensemble == "snapshots" and members > 1:
        return _snapshots(build, train, val, one_hot, epochs=epochs, members=members, **fit)
    networks, histories = [], []
    for member in range(members):
        seed = fit["seed"] + member
        keras.utils.set_random_seed(seed)
        network, history = _fit(
            build(), train, val, one_hot, epochs=epochs, select_on_val=True, **{**fit, "seed": seed}
        )
        networks.append(network)
        histories.append(history)
    return average_of(networks, "type_ensemble"), histories


def check_ensemble(ensemble: str, members: int, epochs: int) -> None:
    """ValueError unless fit_type_classifier can make ``members`` so (before a long run)."""
    if ensemble not in ENSEMBLES:
        raise ValueError(f"Unknown ensemble {ensemble!r}; choose one of {ENSEMBLES}.")
    if ensemble == "snapshots" and epochs % members:
        raise ValueError(f"{epochs} epochs do not split into {members} equal cycles (snapshots).")


def _snapshots(build, train, val, targets, *, epochs: int, members: int, **fit):
    """One fit of ``epochs`` in ``members`` cycles of the learning rate -> the average of
    each cycle's best val epoch, and each cycle's history."""
    keras.utils.set_random_seed(fit["seed"])
    snapshots = BestEpochPerCycle(epochs // members)
    _, history = _fit(
        build(members), train, val, targets, epochs=epochs, select_on_val=False,
        callbacks=[snapshots], **fit,
    )  # fmt: skip
    networks = [build() for _ in range(members)]  # fresh layer names, the snapshots' weights
    for network, weights in zip(networks, snapshots.weights):
        network.set_weights(weights)
    span = snapshots.cycle
    cycles = [{k: v[c * span : (c + 1) * span] for k, v in history.items()} for c in range(members)]
    return average_of(networks, "type_ensemble"), cycles


class BestEpochPerCycle(keras.callbacks.Callback):
    """The weights of the lowest-val-loss epoch of each ``cycle`` epochs: the members
    of a snapshot ensemble, one per restart of the learning rate."""

    def __init__(self, cycle: int):
        super().__init__()
        self.cycle, self.weights, self._best = cycle, [], np.inf

    def on_epoch_end(self, epoch, logs=None):
        if epoch % self.cycle == 0:  # a new cycle: a new member
            self.weights.append(None)
            self._best = np.inf
        if logs["val_loss"] < self._best:
            self._best = logs["val_loss"]
            self.weights[-1] = self.model.get_weights()


def _steps(n: int, epochs: int, batch_size: int) -> int:
    """Optimiser steps of a fit: its learning rate decays to zero over them."""
    return epochs * int(np.ceil(n / batch_size))


def _fit(
    model,
    train,
    val,
    targets,
    *,
    epochs,
    batch_size,
    seed,
    augment,
    select_on_val,
    collections=None,
    callbacks=(),
    verbose=1,
    repaint=None,
):
    """model.fit on (augmented) train, each slice weighted by balanced_weights (by
    class; also by collection within a class when ``collections`` are given);
    ``targets`` turns class indices into what the model's loss expects; ``repaint``:
    see augmented_batches."""
    (x, y), (x_val, y_val) = train, val
    train_collections, val_collections = collections or (None, None)
    weights = balanced_weights(y, train_collections)
    validation = (x_val, targets(y_val))
    if collections:  # choose the epoch on the objective that training weighs
        validation += (balanced_weights(y_val, val_collections),)
    callbacks = list(callbacks)
    if select_on_val:
        callbacks.append(
            keras.callbacks.EarlyStopping("val_loss", patience=epochs, restore_best_weights=True)
        )
    history = model.fit(
        augmented_batches(x, targets(y), weights, batch_size, seed, augment, repaint),
        validation_data=validation,
        epochs=epochs,
        callbacks=callbacks,
        verbose=verbose,
    )
    return model, history.history


def balanced_weights(y: np.ndarray, collections: np.ndarray | None = None) -> np.ndarray:
    """Per-slice loss weights, averaging 1, under which every class counts the same
    whatever its number of slices and, given each slice's collection, so does
    every collection within a class.

    By collection (train.py --balance collection): with the classes alone
    balanced, a class's largest collection sets its look (most normals are
    OASIS's skull-stripped T1 and ms's FLAIR, most tumours sartaj's and
    figshare's T1 post-contrast). Screened on held-out collections and not
    adopted: the few slices of small collections are learnt by heart (docs/experiments.md).
    """
    y = np.asarray(y).astype(int)
    if collections is None:
        collections = np.zeros(len(y))
    group = np.unique(collections, return_inverse=True)[1]
    cell = y * (group.max() + 1) + group
    _, cell_index, cell_size = np.unique(cell, return_inverse=True, return_counts=True)
    classes = np.unique(y)
    groups_in_class = {c: len(np.unique(group[y == c])) for c in classes}
    share = np.array([1 / (len(classes) * groups_in_class[c]) for c in y])  # of the total weight
    return (len(y) * share / cell_size[cell_index]).astype("float32")


def fit_autoencoder(
    train: np.ndarray, val: np.ndarray, *, epochs: int, batch_size: int, seed: int, verbose: int = 1
) -> keras.Model:
    """Train the autoencoder to reconstruct (normal) slices; keep the best val epoch."""
    keras.utils.set_random_seed(seed)
    model = build_autoencoder(train.shape[1], train.shape[3])
    model.fit(
        train,
        train,
        validation_data=(val, val),
        epochs=epochs,
        batch_size=batch_size,
        shuffle=True,
        callbacks=[
            keras.callbacks.EarlyStopping("val_loss", patience=epochs, restore_best_weights=True)
        ],
        verbose=verbose,
    )
    return model
