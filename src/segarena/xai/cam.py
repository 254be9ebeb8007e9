"""Class activation maps for segmentation targets, for every registered model, with no per-model code.

The target of one explanation is *the predicted region of one class*: the sum of that class's logits over the
pixels the model assigns to it (pytorch-grad-cam's ``SemanticSegmentationTarget``; Vinogradova et al., "Towards
Interpretable Semantic Segmentation via Gradient-weighted Class Activation Mapping", AAAI 2020). For a
single-logit sigmoid model the foreground logit map itself is summed over the pixels where it is positive.

The layer and the layout of its output come from the model card (``gradcam_layer``, ``gradcam_reshape``). The CAM
is computed through the :class:`~segarena.models.contract.SegModel` forward, so padding to the input divisor and
resizing to a fixed internal size happen exactly as in training and evaluation; the map at feature resolution is
then put back into input coordinates the same way the wrapper puts the logits back (crop the padding, or resize
from the fixed size).

Methods (all from the ``grad-cam`` package, ``pip install segarena[xai]``):
``gradcam``   Selvaraju et al., ICCV 2017 -- channel weights = spatial mean of the gradients;
``gradcam++`` Chattopadhay et al., WACV 2018 -- higher-order weights, better for several object instances;
``hirescam``  Draelos & Carin, arXiv 2011.08891 -- element-wise gradient x activation, provably faithful to the
              layer's contribution (no spatial averaging of the gradients).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .._errors import ConfigError, SegarenaError

#: method name -> class name in ``pytorch_grad_cam``
METHODS: dict[str, str] = {"gradcam": "GradCAM", "gradcam++": "GradCAMPlusPlus", "hirescam": "HiResCAM"}


@dataclass
class CamResult:
    """CAMs of one batch, in input coordinates."""

    #: float32 [N, H, W], ReLU'd and divided by each map's maximum (all zero where nothing speaks for the class)
    cam: np.ndarray
    #: bool [N, H, W]: the predicted region of the explained class (the target); may be empty
    region: np.ndarray
    #: float32 [N, K, H, W] logits of the explained forward pass
    logits: torch.Tensor
    #: logit channel explained for each item
    channels: list[int]


def _library() -> Any:
    try:
        import pytorch_grad_cam
    except ImportError:
        raise SegarenaError("explanations need the grad-cam package, which is not installed",
                            fix="pip install segarena[xai]") from None
    return pytorch_grad_cam


def check_method(method: str) -> str:
    key = method.lower().replace("_", "").replace("-", "").replace("plusplus", "++")
    if key not in METHODS:
        raise ConfigError(f"unknown explanation method {method!r}", fix=f"use one of {', '.join(METHODS)}")
    return key


def class_channel(cls: int, num_outputs: int) -> tuple[int, bool]:
    """Label class -> (logit channel, sigmoid?). One output = one sigmoid foreground logit (label 1)."""
    if num_outputs == 1:
        if cls != 1:
            raise ConfigError(f"a single-logit (sigmoid) model explains only the foreground class 1, not {cls}",
                              fix="explain class 1")
        return 0, True
    if not 0 <= cls < num_outputs:
        raise ConfigError(f"class {cls} is out of range for a model with {num_outputs} output logits",
                          fix=f"use a class in 0..{num_outputs - 1}")
    return cls, False


def predicted_region(logits: torch.Tensor, channel: int, sigmoid: bool) -> torch.Tensor:
    """Logits [..., K, H, W] -> bool [..., H, W]: pixels predicted as the class of ``channel``."""
    if sigmoid:
        return logits[..., channel, :, :] > 0
    return logits.argmax(-3) == channel


class RegionTarget:
    """Sum of one class's logits over the region the model predicts for it (decided on the same forward pass).

    Equivalent to ``SemanticSegmentationTarget(category, mask)`` with the mask taken from the prediction; keeping
    the mask here saves a second forward pass and records exactly which region was explained.
    """

    def __init__(self, channel: int, sigmoid: bool) -> None:
        self.channel, self.sigmoid = channel, sigmoid
        self.region: torch.Tensor | None = None

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        region = predicted_region(output, self.channel, self.sigmoid).detach()
        self.region = region
        return (output[self.channel] * region).sum()


def token_grid(num_tokens: int, height: int, width: int) -> tuple[int, int, int]:
    """Infer the token grid of a [N, L, C] feature seen by a net whose input is ``height`` x ``width``.

    Returns ``(h, w, skip)``: the first ``skip`` tokens (class/register tokens) are not spatial. Tries every
    stride with ``ceil`` and ``floor`` sizes first (exact for patch embeddings and strided stages), then the
    factor pair of ``L`` closest to the input's aspect ratio.
    """
    for skip in range(9):
        n = num_tokens - skip
        if n <= 0:
            break
        for s in range(1, max(height, width) + 1):
            for h, w in ((-(-height // s), -(-width // s)), (height // s, width // s)):
                if h * w == n and h and w:
                    return h, w, skip
    aspect = height / width
    pairs = [(h, num_tokens // h) for h in range(1, num_tokens + 1) if num_tokens % h == 0]
    h, w = min(pairs, key=lambda p: abs(math.log(p[0] / p[1]) - math.log(aspect)))
    return h, w, 0


def make_reshape(kind: str | None, net_size: dict[str, tuple[int, int]]):
    """The reshape transform for a card's ``gradcam_reshape``; ``net_size['hw']`` is filled by a pre-hook.

    Always copies the tensor, so a later in-place op (``ReLU(inplace=True)``) cannot alter a stored activation.
    """
    if kind not in (None, "", "nhwc", "tokens"):
        raise ConfigError(f"gradcam_reshape={kind!r} is not supported", fix="use None, 'nhwc' or 'tokens' on the card")

    def reshape(t: torch.Tensor) -> torch.Tensor:
        if isinstance(t, (tuple, list)):
            t = t[0]
        t = t.clone()
        if kind == "nhwc":
            return t.permute(0, 3, 1, 2)
        if kind == "tokens":
            hh, ww = net_size["hw"]
            h, w, skip = token_grid(t.shape[1], hh, ww)
            return t[:, skip:].transpose(1, 2).reshape(t.shape[0], t.shape[2], h, w)
        return t

    return reshape


def _seg_cam_class(base: type, layer_name: str, model_name: str) -> type:
    """A subclass of a pytorch-grad-cam method that returns the raw ReLU'd map at feature resolution.

    The library would resize the map to the tensor given to the wrapper and min-max scale it; that is wrong for
    padded inputs (the features cover the padded canvas), so geometry and scaling are done by :func:`compute_cam`.
    """

    class SegCAM(base):  # type: ignore[misc, valid-type]
        _layer_name, _model_name = layer_name, model_name

        def compute_cam_per_layer(self, input_tensor, targets, eigen_smooth):
            acts = [a.cpu().float().numpy() for a in self.activations_and_grads.activations]
            grads = [g.cpu().float().numpy() for g in self.activations_and_grads.gradients]
            if len(acts) != 1 or len(grads) != 1:
                raise SegarenaError(
                    f"Grad-CAM layer {self._layer_name!r} of model {self._model_name!r} produced {len(acts)} "
                    f"activation(s) and {len(grads)} gradient(s) in one forward pass (expected 1 and 1)",
                    fix="set the card's gradcam_layer to a module that runs once and returns one tensor on the "
                        "path to the logits")
            if acts[0].ndim != 4 or acts[0].shape != grads[0].shape:
                raise SegarenaError(
                    f"Grad-CAM layer {self._layer_name!r} of model {self._model_name!r} gives features of shape "
                    f"{acts[0].shape}, not [N, C, h, w]",
                    fix="set the card's gradcam_reshape ('tokens' for [N, L, C], 'nhwc' for channels-last)")
            cam = self.get_cam_image(input_tensor, self.target_layers[0], targets, acts[0], grads[0], eigen_smooth)
            return [np.maximum(cam, 0).astype(np.float32)]

        def aggregate_multi_layers(self, cam_per_target_layer):
            return cam_per_target_layer[0]

    SegCAM.__name__ = SegCAM.__qualname__ = f"Seg{base.__name__}"
    return SegCAM


def compute_cam(model: torch.nn.Module, x: torch.Tensor, classes: int | Sequence[int],
                method: str = "gradcam") -> CamResult:
    """CAMs of ``model`` (a :class:`SegModel`) for ``x`` [N, C, H, W] and one label class per item.

    ``classes`` are label indices (1 = foreground for a single-logit model). Returns maps at the input size.
    """
    lib = _library()
    method = check_method(method)
    card = model.card
    if not card.gradcam_layer:
        raise ConfigError(f"model {card.name!r} has no gradcam_layer on its card",
                          fix="add the dotted path of the last spatial decoder layer to the model card")
    try:
        layer = model.net.get_submodule(card.gradcam_layer)
    except AttributeError:
        raise ConfigError(f"model {card.name!r}: gradcam_layer {card.gradcam_layer!r} is not a submodule of the "
                          f"network", fix="fix the dotted path on the model card") from None
    n = x.shape[0]
    cls_list = [int(classes)] * n if isinstance(classes, (int, np.integer)) else [int(c) for c in classes]
    if len(cls_list) != n:
        raise ConfigError(f"{len(cls_list)} classes given for a batch of {n}", fix="give one class per image")
    n_out = getattr(model, "num_classes", None)
    chans = [class_channel(c, n_out) if n_out else (c, False) for c in cls_list]

    was_training = model.training  # the library switches to eval mode; give the model back as it came
    net_size: dict[str, tuple[int, int]] = {}
    pre = model.net.register_forward_pre_hook(lambda mod, args: net_size.__setitem__("hw", tuple(args[0].shape[-2:])))
    targets = [RegionTarget(ch, sig) for ch, sig in chans]
    cam_obj = None
    try:
        cam_cls = _seg_cam_class(getattr(lib, METHODS[method]), card.gradcam_layer, card.name)
        cam_obj = cam_cls(model=model, target_layers=[layer],
                          reshape_transform=make_reshape(card.gradcam_reshape, net_size))
        with torch.enable_grad():
            raw = cam_obj(input_tensor=x, targets=targets)
        logits = cam_obj.outputs.detach().float()
    finally:
        if cam_obj is not None:
            cam_obj.activations_and_grads.release()
        pre.remove()
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    cam = to_input_coords(torch.from_numpy(raw), x.shape[-2:], net_size["hw"], bool(card.fixed_size))
    peak = cam.flatten(1).amax(1).view(-1, 1, 1)
    cam = cam / torch.where(peak > 0, peak, torch.ones_like(peak))  # an all-zero map stays zero
    region = torch.stack([t.region for t in targets]).cpu().numpy()
    return CamResult(cam=cam.numpy().astype(np.float32), region=region, logits=logits.cpu(),
                     channels=[c for c, _ in chans])


def to_input_coords(cam: torch.Tensor, input_hw: Sequence[int], net_hw: Sequence[int], fixed: bool) -> torch.Tensor:
    """Map [N, h, w] CAMs over the net's input canvas back onto the original input, as SegModel maps logits.

    Padded models: the features cover the padded canvas, so upsample to it and crop the padding off. Fixed-size
    models: the canvas is a resize of the whole input, so resize straight to the input size.
    """
    h, w = int(input_hw[0]), int(input_hw[1])
    cam = cam[:, None].float()
    if fixed:
        out = F.interpolate(cam, size=(h, w), mode="bilinear", align_corners=False)
    else:
        out = F.interpolate(cam, size=tuple(int(v) for v in net_hw), mode="bilinear", align_corners=False)
        out = out[..., :h, :w]
    return out[:, 0].clamp_min(0)


__all__ = [
    "METHODS",
    "CamResult",
    "RegionTarget",
    "check_method",
    "class_channel",
    "compute_cam",
    "predicted_region",
    "to_input_coords",
    "token_grid",
]
