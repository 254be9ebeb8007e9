"""The augmentation presets as plain data: which operations, with which parameters and probabilities.

Kept free of torch so that :mod:`segarena.config` can put a preset's full parameter list into a run's identity
(changing a preset changes the run ids that use it) and ``config show`` can print it. The operations are applied
by :mod:`segarena.data.augment` with kornia, on the device, inside the training step.

Images are augmented as float in [0, 1] (before the model's mean/std normalization); masks follow every geometric
operation with nearest-neighbour sampling; pixels moved in from outside the image are 0 (background).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: bump when the implementation of an operation changes its random stream or results (part of run identity)
IMPLEMENTATION = "kornia-1"


@dataclass(frozen=True)
class Op:
    """One operation: ``kind`` (see :data:`KINDS`), its probability per image, its parameters, and whether a value
    is documented by the source (``inferred`` lists the parameters that are not)."""

    kind: str
    p: float
    params: tuple[tuple[str, Any], ...] = ()
    inferred: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "p": self.p, **{k: list(v) if isinstance(v, tuple) else v for k, v in self.params},
                **({"inferred": list(self.inferred)} if self.inferred else {})}


@dataclass(frozen=True)
class AugPreset:
    name: str
    ops: tuple[Op, ...] = ()
    description: str = ""
    source: str = ""
    notes: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        """What enters a run's identity and its record (``augmentation.json``)."""
        return {"name": self.name, "implementation": IMPLEMENTATION, "ops": [o.to_dict() for o in self.ops]}


#: operation kinds and what they do (the kornia class, or the hand-written step where kornia has none)
KINDS = {
    "hflip": "horizontal mirror (kornia RandomHorizontalFlip)",
    "vflip": "vertical mirror (kornia RandomVerticalFlip)",
    "affine": "rotation, translation (share of the side), scale, shear (kornia RandomAffine; nearest for masks)",
    "rotate": "rotation only (kornia RandomAffine with degrees only)",
    "scale": "isotropic zoom only (kornia RandomAffine with scale only)",
    "blur": "Gaussian blur with a random sigma (kornia RandomGaussianBlur); images only",
    "color": "brightness/contrast/saturation/hue factors (kornia ColorJitter, torchvision semantics); images only",
    "noise": "additive Gaussian noise (kornia RandomGaussianNoise); images only",
    "gamma": "gamma correction x ** g (kornia RandomGamma); images only",
    "lowres": "low-resolution simulation: nearest down by a random zoom, bicubic back up (hand-written: kornia has "
              "no such operation); images only",
}


def _op(kind: str, p: float, inferred: tuple[str, ...] = (), **params: Any) -> Op:
    return Op(kind, p, tuple(params.items()), inferred)


PRESETS: dict[str, AugPreset] = {p.name: p for p in (
    AugPreset("none", description="no augmentation"),
    AugPreset("light", (_op("hflip", 0.5), _op("vflip", 0.5)), description="random horizontal and vertical flips"),
    AugPreset(
        "paper",
        (_op("blur", 0.5, ("p",), kernel_size=25, sigma=(0.001, 2.0)),
         _op("affine", 0.5, ("p",), degrees=180.0, translate=0.25, scale=(0.75, 1.25), shear=17.5),
         _op("color", 0.5, brightness=(0.875, 1.125), contrast=(0.5, 1.5), saturation=(0.5, 1.5), hue=(-0.05, 0.05)),
         _op("hflip", 0.5), _op("vflip", 0.5)),
        description="the authors' known pipeline (WoundAmbit): Gaussian blur (kernel 25, sigma 0.001-2), affine "
                    "(±180°, translate 0.25, scale 0.75-1.25, shear 17.5°), photometric distortion (brightness "
                    "0.875-1.125, contrast and saturation 0.5-1.5, hue ±0.05, p 0.5), both flips",
        source="WoundAmbit's public configuration, the framework of Borst & Kounev's earlier work",
        notes=("inferred: the probabilities of blur and affine (0.5 each; the configuration lists only their "
               "ranges) and the order blur -> affine -> photometric -> flips",
               "grayscale images: saturation and hue are no-ops on gray values and are skipped",
               "the paper itself (Borst & Kounev 2026) does not list its augmentations")),
    AugPreset(
        "nnunet",
        (_op("rotate", 0.2, degrees=180.0), _op("scale", 0.2, scale=(0.7, 1.4)),
         _op("noise", 0.1, ("std",), std=0.05),
         _op("blur", 0.2, ("kernel_size",), kernel_size=7, sigma=(0.5, 1.0)),
         _op("color", 0.15, brightness=(0.75, 1.25)), _op("color", 0.15, contrast=(0.75, 1.25)),
         _op("lowres", 0.25, zoom=(0.5, 1.0)), _op("gamma", 0.3, gamma=(0.7, 1.5)),
         _op("hflip", 0.5), _op("vflip", 0.5)),
        description="nnU-Net's standard 2D set: rotation ±180° and scaling 0.7-1.4 (p 0.2 each), Gaussian noise "
                    "(p 0.1), Gaussian blur sigma 0.5-1 (p 0.2), multiplicative brightness and contrast 0.75-1.25 "
                    "(p 0.15 each), low-resolution simulation zoom 0.5-1 (p 0.25), gamma 0.7-1.5 (p 0.3), "
                    "mirroring along both axes",
        source="Isensee et al., nnU-Net, Nature Methods 2021 (supplementary note on data augmentation) and its "
               "default 2D training transforms",
        notes=("approximations: noise std 0.05 on [0, 1] images (nnU-Net draws a variance in 0-0.1 on z-scored "
               "intensities); blur kernel 7 (covers 3 sigma); nnU-Net's per-channel probabilities and its "
               "gamma on the inverted image (p 0.1) are not reproduced; elastic deformation is off in nnU-Net's "
               "defaults and here",)),
)}


def preset_identity(name: str) -> dict[str, Any] | None:
    """The full parameter list of preset ``name`` (``None`` for ``none`` or an unknown name)."""
    preset = PRESETS.get(name)
    if preset is None or not preset.ops:
        return None
    return preset.to_dict()
