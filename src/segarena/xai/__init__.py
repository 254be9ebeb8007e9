"""Quantitative explainability: Grad-CAM / Grad-CAM++ / HiResCAM for segmentation targets on every registered
model, the energy share inside the reference and the deletion AUC per case, bootstrap aggregates, galleries.

``pytorch-grad-cam`` (``pip install segarena[xai]``) is imported only when a CAM is computed.
"""
from __future__ import annotations

from .cam import METHODS, CamResult, compute_cam
from .explain import explain, select_cases
from .measures import bootstrap_mean_ci, curve_auc, deletion_curve, energy_share, summarize

__all__ = [
           "METHODS",
           "CamResult",
           "bootstrap_mean_ci",
           "compute_cam",
           "curve_auc",
           "deletion_curve",
           "energy_share",
           "explain",
           "select_cases",
           "summarize",
]
