"""Grad-CAM: where in the slice the classifier looked."""

from __future__ import annotations

import numpy as np


class GradCam:
    """Grad-CAM of one classifier, compiled once.

    The probe model (last spatial feature map + output) and the gradient are
    traced into one ``tf.function`` on construction: building a keras.Model and
    running an eager GradientTape on every call cost ~60 ms, the graph ~5 ms.
    """

    def __init__(self, classifier):
        import keras
        import tensorflow as tf

        from .models import members_of

        # Each member's last layer with a spatial (4-D) output: the deepest
        # feature map before pooling. An ensemble (models.average_of) is the
        # mean of its members, so its map is the sum of theirs, each weighted
        # by the gradient of the averaged score.
        probes = [
            keras.Model(net.input, [_last_feature_map(net), net.output])
            for net in members_of(classifier)
        ]

        def maps(x):
            with tf.GradientTape() as tape:
                outputs = [probe(x, training=False) for probe in probes]
                features = [f for f, _ in outputs]
                probability = tf.add_n([p for _, p in outputs]) / len(outputs)
                # One unit: P(tumour). Several (tumour types): P(the most likely one).
                score = (
                    tf.reduce_max(probability, axis=1)
                    if probability.shape[1] > 1
                    else probability[:, 0]
                )
            # Each slice's score depends on its own features only, so one
            # gradient of the batch's scores gives every slice its own.
            gradients = tape.gradient(score, features)
            weighted = [
                tf.reduce_sum(f * tf.reduce_mean(g, axis=(1, 2), keepdims=True), axis=-1)
                for f, g in zip(features, gradients)
            ]
            return tf.nn.relu(tf.add_n(weighted))

        self._maps = tf.function(
            maps, input_signature=[tf.TensorSpec([None, *classifier.input.shape[1:]], tf.float32)]
        )

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Heat maps in [0, 1] at input resolution, (N, S, S), of preprocessed inputs (N, S, S, C)."""
        import cv2

        cams = self._maps(np.ascontiguousarray(x, np.float32)).numpy().astype(np.float32)
        cams /= np.maximum(cams.max(axis=(1, 2), keepdims=True), 1e-12)
        side = x.shape[1:3][::-1]
        return np.stack([cv2.resize(cam, side, interpolation=cv2.INTER_LINEAR) for cam in cams])


def _last_feature_map(network):
    return [layer for layer in network.layers if len(layer.output.shape) == 4][-1].output


def overlay(grey: np.ndarray, heat: np.ndarray, alpha: float = 0.4) -> np.ndarray:
    """Blend a [0, 1] heat map (any size) over a grey uint8 image as RGB uint8."""
    import cv2

    heat = cv2.resize(heat, grey.shape[::-1], interpolation=cv2.INTER_LINEAR)
    colour = cv2.applyColorMap(np.round(heat * 255).astype(np.uint8), cv2.COLORMAP_JET)
    colour = cv2.cvtColor(colour, cv2.COLOR_BGR2RGB)
    base = cv2.cvtColor(grey, cv2.COLOR_GRAY2RGB)
    return cv2.addWeighted(base, 1 - alpha, colour, alpha, 0)
