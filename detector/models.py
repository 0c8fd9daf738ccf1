"""Network builders: the report's CNN, the default CNN and the autoencoder.

Stock Keras layers and registered layers of ours (MirrorAsymmetry, MixStyle),
no Lambda layers, so the saved .keras files load with safe_mode=True.
"""

from __future__ import annotations

import keras
from keras import layers

ARCHITECTURES = ("default", "report")


def build_classifier(
    arch: str,
    image_size: int,
    channels: int,
    steps: int = 1000,
    asymmetry: bool = False,
    mix_style: bool = False,
) -> keras.Model:
    """A compiled binary classifier ending in one sigmoid unit = P(tumour).

    ``steps`` is the length of training, over which the default network's
    learning rate decays to zero. ``asymmetry``: the default network also
    reads each slice's difference from its mirror image (MirrorAsymmetry);
    ``mix_style``: it trains with MixStyle.
    """
    if arch == "report":
        return _report_cnn(image_size, channels)
    if arch == "default":
        return _default_cnn(image_size, channels, steps, asymmetry, mix_style)
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


@keras.saving.register_keras_serializable(package="detector")
class MirrorAsymmetry(layers.Layer):
    """The slice and, as more channels, its difference from its left-right mirror image.

    A healthy brain is nearly symmetric about its midline (the middle of the
    brain crop) on any scanner and sequence; most tumours are not. The
    difference is that cue in a form that does not depend on which tissue a
    sequence makes bright. Signed, so that it also says which side is brighter.
    Screened on held-out collections and not adopted: Br35H level, sartaj lower
    (docs/experiments.md).
    """

    def call(self, x):
        from keras import ops

        return ops.concatenate([x, x - ops.flip(x, axis=2)], axis=-1)


@keras.saving.register_keras_serializable(package="detector")
class MixStyle(layers.Layer):
    """While training, each slice's feature statistics mixed with another slice's.

    MixStyle (Zhou et al. 2021): a scanner or sequence shows in the early
    feature maps' per-channel means and deviations, the "style"; the contents
    show in what is left. With probability ``p`` a batch has each slice's style
    replaced by a random blend (weight ~ Beta(``alpha``, ``alpha``)) of its own
    and a shuffled partner's, so that the network learns the same answer under
    many styles. At inference it passes the features through unchanged.
    Screened on held-out collections and not adopted: sartaj a little ahead,
    Br35H behind (docs/experiments.md).
    """

    def __init__(self, p: float = 0.5, alpha: float = 0.1, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.p, self.alpha, self.seed = p, alpha, seed
        self.seeds = keras.random.SeedGenerator(seed)

    def call(self, x, training=False):
        from keras import ops

        if not training:
            return x
        batch = ops.shape(x)[0]
        mean = ops.stop_gradient(ops.mean(x, axis=(1, 2), keepdims=True))
        deviation = ops.stop_gradient(ops.sqrt(ops.var(x, axis=(1, 2), keepdims=True) + 1e-6))
        weight = keras.random.beta((batch, 1, 1, 1), self.alpha, self.alpha, seed=self.seeds)
        partner = keras.random.shuffle(ops.arange(batch), seed=self.seeds)
        mixed = lambda stat: weight * stat + (1 - weight) * ops.take(stat, partner, axis=0)
        styled = (x - mean) / deviation * mixed(deviation) + mixed(mean)
        return ops.where(keras.random.uniform((), seed=self.seeds) < self.p, styled, x)

    def get_config(self):
        return {**super().get_config(), "p": self.p, "alpha": self.alpha, "seed": self.seed}


def _default_cnn(
    image_size: int, channels: int, steps: int, asymmetry: bool = False, mix_style: bool = False
) -> keras.Model:
    """The detector: _backbone ending in one sigmoid unit, P(tumour)."""
    stem = MirrorAsymmetry() if asymmetry else None
    head = layers.Dense(1, activation="sigmoid")
    model = keras.Model(
        *_backbone(image_size, channels, head, stem, mix_style=mix_style), name="default_cnn"
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


def _backbone(image_size: int, channels: int, head, stem=None, width: int = 24, mix_style=False):
    """(inputs, outputs) of a small VGG-style net with BatchNorm and global pooling,
    sized for CPU training, ending in ``head``; ``stem``: a layer applied to the
    input first; ``mix_style``: MixStyle after the first two stages, where the
    style of a scanner shows (Zhou et al. put it after the early blocks).

    A strided stem halves the input at once: the first full-resolution layer
    would otherwise cost as much as the rest of the network.
    """
    inputs = keras.Input((image_size, image_size, channels))
    x = _conv_bn(stem(inputs) if stem else inputs, width, strides=2)
    for stage, filters in enumerate((width, 2 * width, 4 * width)):
        x = _conv_bn(x, filters)
        x = _conv_bn(x, filters)
        x = layers.MaxPooling2D(2)(x)
        if mix_style and stage < 2:
            x = MixStyle()(x)
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
