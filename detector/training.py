"""Fitting the two networks: augmentation, checkpoint selection on val, seeds."""

from __future__ import annotations

import keras
import numpy as np
from keras import layers

from .models import build_autoencoder, build_classifier


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


def _dataset(x, y, batch_size: int, seed: int, augment: bool):
    import tensorflow as tf

    data = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=seed)
    data = data.batch(batch_size)
    if augment:
        aug = augmenter(seed)
        data = data.map(lambda a, b: (aug(a, training=True), b), num_parallel_calls=tf.data.AUTOTUNE)
    return data.prefetch(tf.data.AUTOTUNE)


def fit_classifier(
    arch: str,
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    *,
    epochs: int,
    batch_size: int,
    seed: int,
    augment: bool,
    select_on_val: bool,
    verbose: int = 1,
) -> tuple[keras.Model, dict]:
    """Train a classifier; keep the epoch with the lowest val loss if select_on_val."""
    keras.utils.set_random_seed(seed)
    x, y = train
    steps = epochs * int(np.ceil(len(x) / batch_size))
    model = build_classifier(arch, x.shape[1], x.shape[3], steps=steps)
    callbacks = []
    if select_on_val:
        callbacks.append(
            keras.callbacks.EarlyStopping("val_loss", patience=epochs, restore_best_weights=True)
        )
    history = model.fit(
        _dataset(x, y.astype("float32"), batch_size, seed, augment),
        validation_data=(val[0], val[1].astype("float32")),
        epochs=epochs,
        callbacks=callbacks,
        verbose=verbose,
    )
    return model, history.history


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
        callbacks=[keras.callbacks.EarlyStopping("val_loss", patience=epochs, restore_best_weights=True)],
        verbose=verbose,
    )
    return model
