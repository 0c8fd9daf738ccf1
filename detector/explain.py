"""Grad-CAM: where in the slice the classifier looked."""

from __future__ import annotations

import numpy as np


def grad_cam(classifier, x: np.ndarray) -> np.ndarray:
    """Heat map in [0, 1] at input resolution for one preprocessed input (S, S, C).

    Uses the last layer with a spatial (4-D) output, i.e. the deepest feature
    map before pooling or flattening.
    """
    import cv2
    import keras
    import tensorflow as tf

    conv_layer = [layer for layer in classifier.layers if len(layer.output.shape) == 4][-1]
    probe = keras.Model(classifier.input, [conv_layer.output, classifier.output])
    with tf.GradientTape() as tape:
        features, probability = probe(x[None].astype(np.float32), training=False)
        score = probability[:, 0]
    gradients = tape.gradient(score, features)[0].numpy()
    features = features[0].numpy()
    weights = gradients.mean(axis=(0, 1))
    cam = np.maximum(features @ weights, 0.0)
    cam = cam / cam.max() if cam.max() > 0 else cam
    return cv2.resize(cam.astype(np.float32), x.shape[:2][::-1], interpolation=cv2.INTER_LINEAR)


def overlay(grey: np.ndarray, heat: np.ndarray, alpha: float = 0.4) -> np.ndarray:
    """Blend a [0, 1] heat map (any size) over a grey uint8 image as RGB uint8."""
    import cv2

    heat = cv2.resize(heat, grey.shape[::-1], interpolation=cv2.INTER_LINEAR)
    colour = cv2.applyColorMap(np.round(heat * 255).astype(np.uint8), cv2.COLORMAP_JET)
    colour = cv2.cvtColor(colour, cv2.COLOR_BGR2RGB)
    base = cv2.cvtColor(grey, cv2.COLOR_GRAY2RGB)
    return cv2.addWeighted(base, 1 - alpha, colour, alpha, 0)
