"""Network builders: the report's CNN, the default CNN and the autoencoder.

Only stock Keras layers, so the saved .keras files load with safe_mode=True.
"""

from __future__ import annotations

import keras
from keras import layers

ARCHITECTURES = ("default", "report")


def build_classifier(arch: str, image_size: int, channels: int, steps: int = 1000) -> keras.Model:
    """A compiled binary classifier ending in one sigmoid unit = P(tumour).

    ``steps`` is the length of training, over which the default network's
    learning rate decays to zero.
    """
    if arch == "report":
        return _report_cnn(image_size, channels)
    if arch == "default":
        return _default_cnn(image_size, channels, steps)
    raise ValueError(f"Unknown architecture {arch!r}; choose one of {ARCHITECTURES}.")


def _report_cnn(image_size: int, channels: int) -> keras.Model:
    """The 2023 report's network, layer for layer, with its optimiser.

    Built functionally rather than as a Sequential so that it exposes
    .input/.output like the other networks (saving and Grad-CAM use them).
    """
    inputs = keras.Input((image_size, image_size, channels))
    x = inputs
    for filters in (32, 32, 64):
        x = layers.Conv2D(filters, 3, activation="relu")(x)
        x = layers.MaxPooling2D(2)(x)
    x = layers.Flatten()(x)
    x = layers.Dense(64, activation="relu")(x)
    x = layers.Dropout(0.5)(x)
    outputs = layers.Dense(1, activation="sigmoid")(x)
    model = keras.Model(inputs, outputs, name="report_cnn")
    model.compile(optimizer="rmsprop", loss="binary_crossentropy", metrics=["accuracy"])
    return model


def _conv_bn(x, filters: int, strides: int = 1):
    x = layers.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    return layers.Activation("relu")(x)


def _default_cnn(image_size: int, channels: int, steps: int) -> keras.Model:
    """The detector: _backbone ending in one sigmoid unit, P(tumour)."""
    model = keras.Model(
        *_backbone(image_size, channels, layers.Dense(1, activation="sigmoid")), name="default_cnn"
    )
    model.compile(
        optimizer=_adamw(steps),
        loss=keras.losses.BinaryCrossentropy(label_smoothing=0.05),
        metrics=["accuracy", keras.metrics.AUC(name="auc")],
    )
    return model


def build_type_classifier(
    image_size: int, channels: int, classes: int, steps: int = 1000, cycles: int = 1
) -> keras.Model:
    """The default network ending in a softmax over the tumour types (catalogue.TUMOR_TYPES).

    ``cycles`` > 1: the learning rate decays to zero and restarts that many times
    over ``steps``, for a snapshot ensemble (training.fit_type_classifier).
    """
    head = layers.Dense(classes, activation="softmax")
    model = keras.Model(*_backbone(image_size, channels, head), name="type_cnn")
    model.compile(
        optimizer=_adamw(steps, cycles),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=0.05),
        metrics=["accuracy"],
    )
    return model


def average_of(networks: list, name: str) -> keras.Model:
    """One network whose output is the mean of ``networks``' outputs (one input):
    an ensemble that saves, loads and predicts as one model. One network is
    returned as it is."""
    if len(networks) == 1:
        return networks[0]
    inputs = keras.Input(networks[0].input.shape[1:])
    # Uncompiled views under their own names: layer names must be unique, and
    # no optimiser state is saved with them.
    members = [keras.Model(n.input, n.output, name=f"{n.name}_{i}") for i, n in enumerate(networks)]
    return keras.Model(inputs, layers.Average()([m(inputs) for m in members]), name=name)


def members_of(network: keras.Model) -> list:
    """The networks that ``average_of`` made ``network`` of, or [network]."""
    members = [layer for layer in network.layers if isinstance(layer, keras.Model)]
    return members or [network]


def _backbone(image_size: int, channels: int, head, width: int = 24):
    """(inputs, outputs) of a small VGG-style net with BatchNorm and global pooling,
    sized for CPU training, ending in ``head``.

    A strided stem halves the input at once: the first full-resolution layer
    would otherwise cost as much as the rest of the network.
    """
    inputs = keras.Input((image_size, image_size, channels))
    x = _conv_bn(inputs, width, strides=2)
    for filters in (width, 2 * width, 4 * width):
        x = _conv_bn(x, filters)
        x = _conv_bn(x, filters)
        x = layers.MaxPooling2D(2)(x)
    x = _conv_bn(x, 8 * width, strides=1)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(0.3)(x)
    return inputs, head(x)


def _adamw(steps: int, cycles: int = 1):
    """AdamW whose learning rate decays to zero over ``steps``, on a cosine, or
    over each of ``cycles`` equal parts of them, restarting at the top each time."""
    schedules = keras.optimizers.schedules
    if cycles == 1:
        rate = schedules.CosineDecay(2e-3, steps, warmup_target=None)
    else:
        rate = schedules.CosineDecayRestarts(2e-3, steps // cycles, t_mul=1.0, m_mul=1.0)
    return keras.optimizers.AdamW(rate, weight_decay=1e-4)


def build_autoencoder(image_size: int, channels: int, width: int = 16) -> keras.Model:
    """A convolutional autoencoder: three stride-2 stages down, three up.

    The decoder narrows as it grows (its full-resolution layers would
    otherwise cost ten times the classifier).

    Sides that are not a multiple of 8 are zero-padded on the way in and
    cropped on the way out, so any input size reconstructs to itself.
    """
    inputs = keras.Input((image_size, image_size, channels))
    pad = (-image_size) % 8
    x = layers.ZeroPadding2D(((0, pad), (0, pad)))(inputs) if pad else inputs
    for filters in (width, 2 * width, 4 * width):
        x = layers.Conv2D(filters, 3, strides=2, padding="same", activation="relu")(x)
    for filters in (2 * width, width, width // 2):
        x = layers.Conv2DTranspose(filters, 3, strides=2, padding="same", activation="relu")(x)
    outputs = layers.Conv2D(channels, 3, padding="same", activation="sigmoid")(x)
    if pad:
        outputs = layers.Cropping2D(((0, pad), (0, pad)))(outputs)
    model = keras.Model(inputs, outputs, name="autoencoder")
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    return model
