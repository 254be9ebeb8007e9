"""Overlays of predictions on images: reference outline in green, prediction filled in translucent red."""
from __future__ import annotations

import numpy as np
from scipy import ndimage


def _outline(mask: np.ndarray) -> np.ndarray:
    return mask & ~ndimage.binary_erosion(mask, iterations=1, border_value=0)


def overlay(image: np.ndarray, ref: np.ndarray, pred: np.ndarray, alpha: float = 0.4) -> np.ndarray:
    """``image`` uint8 [H, W, C] (C = 1 or 3), label maps [H, W] -> uint8 RGB [H, W, 3]."""
    img = image if image.ndim == 3 else image[..., None]
    rgb = np.repeat(img, 3, axis=2) if img.shape[2] == 1 else img[..., :3]
    out = rgb.astype(np.float32)
    fg = pred > 0
    out[fg] = (1 - alpha) * out[fg] + alpha * np.array([230, 40, 40], np.float32)
    edge = _outline(ref > 0)
    out[edge] = np.array([40, 230, 40], np.float32)
    return np.clip(out, 0, 255).astype(np.uint8)


def side_by_side(image: np.ndarray, ref: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Image | overlay, as one RGB strip."""
    img = image if image.ndim == 3 else image[..., None]
    rgb = np.repeat(img, 3, axis=2) if img.shape[2] == 1 else img[..., :3]
    gap = np.full((rgb.shape[0], 4, 3), 255, np.uint8)
    return np.concatenate([rgb, gap, overlay(image, ref, pred)], axis=1)
