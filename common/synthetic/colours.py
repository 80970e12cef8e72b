"""Colour draws for people and the cabin: BGR float32 (3,) in [0, 255]."""

from __future__ import annotations

import cv2
import numpy as np


def hsv(hue: float, saturation: float, value: float) -> np.ndarray:
    """BGR float32 (3,) from hue in [0, 180), saturation and value in [0, 255] (OpenCV's HSV)."""
    pixel = np.array([[[hue, saturation, value]]], np.float64).clip(0, [179, 255, 255]).astype(np.uint8)
    return cv2.cvtColor(pixel, cv2.COLOR_HSV2BGR)[0, 0].astype(np.float32)


SKIN_TONES = np.array([[178, 196, 236], [140, 170, 215], [105, 140, 190], [75, 105, 150], [50, 72, 105]],
                      np.float32)  # BGR, light to dark
HAIR_COLOURS = np.array([[22, 22, 25], [30, 45, 70], [45, 75, 115], [110, 160, 200], [150, 150, 150],
                         [40, 60, 140]], np.float32)  # BGR


def skin_colour(rng: np.random.Generator) -> np.ndarray:
    """A tone between two neighbouring SKIN_TONES, each channel varied by up to 7%."""
    t = rng.uniform(0, len(SKIN_TONES) - 1)
    i = min(int(t), len(SKIN_TONES) - 2)
    tone = SKIN_TONES[i] + (t - i) * (SKIN_TONES[i + 1] - SKIN_TONES[i])
    return tone * rng.uniform(0.93, 1.07, 3).astype(np.float32)


def clothing_colour(rng: np.random.Generator) -> np.ndarray:
    """A grey (black to white) about a third of the time, else any hue."""
    if rng.random() < 0.35:  # greys, black, white
        return np.full(3, rng.uniform(25, 225), np.float32) * rng.uniform(0.95, 1.05, 3).astype(np.float32)
    return hsv(rng.uniform(0, 180), rng.uniform(60, 230), rng.uniform(50, 230))


def vary(colour: np.ndarray, rng: np.random.Generator, amount: float = 0.1) -> np.ndarray:
    """`colour` with each channel scaled by a factor in [1 - amount, 1 + amount], clipped to [0, 255]."""
    return np.clip(colour * rng.uniform(1 - amount, 1 + amount, 3).astype(np.float32), 0, 255)
