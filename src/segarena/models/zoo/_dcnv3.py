"""DCNv3, the deformable-convolution operator of InternImage (Wang et al., CVPR 2023, arXiv:2211.05778).

DCNv3 splits the channels into ``group`` groups; every output pixel of a group gathers ``kernel_h * kernel_w``
bilinear samples at the regular kernel grid shifted by learned offsets and sums them with softmax-normalised,
per-group modulation weights (no per-channel kernel weights: the channel mixing lives in the input and output
projections). The official code (github.com/OpenGVLab/InternImage, ``ops_dcnv3``) ships a CUDA kernel, plus a
slow "for debug" PyTorch function. This module has:

* :func:`dcnv3_core_pytorch`, our own vectorised ``grid_sample`` implementation with the same sampling semantics
  (checked against an explicit per-pixel bilinear loop and against ``torchvision.ops.deform_conv2d`` in the unit
  tests). It runs on any device, so InternImage trains and tests on CPU.
* :func:`dcnv3_core`, which uses the official compiled kernel (the ``DCNv3`` extension built from ``ops_dcnv3``)
  when it is importable and the input is on CUDA, and the PyTorch path otherwise. The kernel is called with the
  official signature of its installed version: DCNv3 1.1 (the current ``ops_dcnv3``) takes a trailing
  ``remove_center`` flag after ``im2col_step`` in both ``dcnv3_forward`` and ``dcnv3_backward``; 1.0 does not.
* :class:`DCNv3`, the module (depth-wise conv -> LayerNorm -> GELU to predict offsets and weights, input/output
  projections), channels-last in and out like the official one.

Sampling semantics: for output pixel ``(i, j)`` and kernel point ``(kx, ky)`` (``kx`` over the width, ``ky`` over
the height, point index ``kx * kernel_h + ky``) the sample sits at, in input pixel coordinates,
``x = j*stride_w - pad_w + c_w + (kx*dilation_w - c_w) * offset_scale + dx * offset_scale`` with
``c_w = dilation_w * (kernel_w - 1) // 2`` (and the same for ``y``); positions outside the image read zeros.
Offsets are stored per group and point as ``(dx, dy)`` pairs.
"""
from __future__ import annotations

import importlib
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DCNv3", "dcnv3_core", "dcnv3_core_pytorch", "has_compiled_dcnv3"]


@lru_cache(maxsize=1)
def _compiled_ext():
    """The official compiled extension (``import DCNv3`` after building ``ops_dcnv3``), or None."""
    try:
        return importlib.import_module("DCNv3")
    except Exception:  # noqa: BLE001 - missing, or built against another torch/CUDA
        return None


def has_compiled_dcnv3() -> bool:
    """Whether the official CUDA kernel is importable here."""
    return _compiled_ext() is not None and hasattr(_compiled_ext(), "dcnv3_forward")


def compiled_dcnv3_version() -> float:
    """The installed extension's version (``pip``'s ``DCNv3`` distribution, as the official wrapper reads it).

    Unknown (built in place, no metadata) counts as 1.1, the version of the current official ``ops_dcnv3``."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return float(".".join(version("DCNv3").split(".")[:2]))
    except (PackageNotFoundError, ValueError):
        return 1.1


def _kernel_tail(im2col_step: int, remove_center: bool) -> tuple:
    """The arguments after ``offset_scale`` (forward) / ``grad_output`` (backward) of the installed kernel:
    ``(im2col_step, remove_center)`` for DCNv3 > 1.0, ``(im2col_step,)`` for 1.0 (which cannot remove it)."""
    if compiled_dcnv3_version() > 1.0:
        return (im2col_step, bool(remove_center))
    if remove_center:
        raise RuntimeError("remove_center needs DCNv3 >= 1.1; rebuild ops_dcnv3 from the current InternImage code")
    return (im2col_step,)


def _kernel_grid(kernel_h: int, kernel_w: int, dilation_h: int, dilation_w: int, offset_scale: float,
                 device: torch.device) -> torch.Tensor:
    """``[P, 2]`` (x, y) displacement of each kernel point from the window centre, scaled; point ``kx*kh + ky``."""
    cw, ch = dilation_w * (kernel_w - 1) // 2, dilation_h * (kernel_h - 1) // 2
    kx = torch.arange(kernel_w, device=device, dtype=torch.float32) * dilation_w - cw
    ky = torch.arange(kernel_h, device=device, dtype=torch.float32) * dilation_h - ch
    gx, gy = torch.meshgrid(kx, ky, indexing="ij")  # x outer, y inner: the official point order
    return torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=-1) * offset_scale


def dcnv3_core_pytorch(x: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor, kernel_h: int, kernel_w: int,
                       stride_h: int, stride_w: int, pad_h: int, pad_w: int, dilation_h: int, dilation_w: int,
                       group: int, group_channels: int, offset_scale: float) -> torch.Tensor:
    """DCNv3 sampling in plain PyTorch (one ``grid_sample`` call), any device, differentiable.

    ``x``: ``[N, H, W, group*group_channels]`` channels-last; ``offset``: ``[N, Ho, Wo, group*P*2]``;
    ``mask``: ``[N, Ho, Wo, group*P]`` (already softmax-normalised per group). Returns ``[N, Ho, Wo, C]``.
    """
    n, h, w, c = x.shape
    _, ho, wo, _ = offset.shape
    p = kernel_h * kernel_w
    if c != group * group_channels:
        raise ValueError(f"DCNv3: input has {c} channels, expected group*group_channels={group * group_channels}")
    dev = x.device
    ct = torch.float64 if x.dtype == torch.float64 else torch.float32  # coordinates never in half precision
    # window centres in input pixel coordinates
    cy = torch.arange(ho, device=dev, dtype=ct) * stride_h - pad_h + dilation_h * (kernel_h - 1) // 2
    cx = torch.arange(wo, device=dev, dtype=ct) * stride_w - pad_w + dilation_w * (kernel_w - 1) // 2
    centre = torch.stack(torch.meshgrid(cx, cy, indexing="xy"), dim=-1)  # [Ho, Wo, 2] as (x, y)
    base = centre[:, :, None, None, :] + _kernel_grid(kernel_h, kernel_w, dilation_h, dilation_w, offset_scale, dev).to(ct)
    loc = base + offset.to(ct).reshape(n, ho, wo, group, p, 2) * offset_scale  # [N, Ho, Wo, G, P, 2]
    size = torch.tensor([w, h], device=dev, dtype=ct)
    grid = (2 * loc + 1) / size - 1  # pixel centres -> [-1, 1] with align_corners=False
    grid = grid.permute(0, 3, 1, 2, 4, 5).reshape(n * group, ho * wo, p, 2).to(x.dtype)
    inp = x.permute(0, 3, 1, 2).reshape(n * group, group_channels, h, w)
    sampled = F.grid_sample(inp, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    weights = mask.reshape(n, ho * wo, group, p).permute(0, 2, 1, 3).reshape(n * group, 1, ho * wo, p)
    out = (sampled * weights.to(sampled.dtype)).sum(-1)  # [N*G, Cg, Ho*Wo]
    return out.reshape(n, c, ho, wo).permute(0, 2, 3, 1).contiguous()


class _CompiledDCNv3(torch.autograd.Function):
    """Autograd wrapper around the official CUDA kernel: ``dcnv3_forward(input, offset, mask, kernel_h, kernel_w,
    stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, group, group_channels, offset_scale, im2col_step,
    remove_center)`` and ``dcnv3_backward(..., offset_scale, grad_output, im2col_step, remove_center)`` (1.1)."""

    @staticmethod
    def forward(ctx, x, offset, mask, args, im2col_step, remove_center=False):
        ext = _compiled_ext()
        ctx.args, ctx.tail = args, _kernel_tail(im2col_step, remove_center)
        ctx.save_for_backward(x, offset, mask)
        return ext.dcnv3_forward(x, offset, mask, *args, *ctx.tail)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        x, offset, mask = ctx.saved_tensors
        gx, goff, gmask = _compiled_ext().dcnv3_backward(x, offset, mask, *ctx.args, grad_out.contiguous(),
                                                         *ctx.tail)
        return gx, goff, gmask, None, None, None


def dcnv3_core(x: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor, kernel_h: int, kernel_w: int,
               stride_h: int, stride_w: int, pad_h: int, pad_w: int, dilation_h: int, dilation_w: int,
               group: int, group_channels: int, offset_scale: float, use_compiled: bool | None = None) -> torch.Tensor:
    """DCNv3 sampling: the official CUDA kernel for CUDA inputs when it is installed, else the PyTorch path.

    ``use_compiled=False`` forces the PyTorch path; ``True`` requires the kernel (error if it is missing).
    """
    args = (kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, group, group_channels,
            float(offset_scale))
    if use_compiled is None:
        use_compiled = x.is_cuda and has_compiled_dcnv3()
    if use_compiled:
        if not has_compiled_dcnv3():
            raise RuntimeError("the official DCNv3 CUDA extension is not importable (build ops_dcnv3 first)")
        # the kernel needs contiguous tensors of one dtype; autocast may hand us mixed ones
        mask = mask.to(x.dtype)
        offset = offset.to(x.dtype)
        return _CompiledDCNv3.apply(x.contiguous(), offset.contiguous(), mask.contiguous(), args, 256)
    return dcnv3_core_pytorch(x, offset, mask, *args)


class DCNv3(nn.Module):
    """The DCNv3 operator module, channels-last ``[N, H, W, C]`` in and out.

    A depth-wise ``dw_kernel_size`` conv (+ LayerNorm + GELU) of the input predicts, per group, ``kernel**2``
    offsets and modulation logits (softmax over the points); the offsets are zero-initialised so the operator
    starts as a plain (softmax-weighted) 3x3 aggregation. Attribute names are ours; the InternImage converter maps
    the official ones onto them.
    """

    def __init__(self, channels: int, group: int, kernel_size: int = 3, stride: int = 1, pad: int = 1,
                 dilation: int = 1, offset_scale: float = 1.0, dw_kernel_size: int | None = None,
                 use_compiled: bool | None = None) -> None:
        super().__init__()
        if channels % group:
            raise ValueError(f"DCNv3: channels {channels} must be divisible by group {group}")
        dw = dw_kernel_size or kernel_size
        self.channels, self.group, self.group_channels = channels, group, channels // group
        self.kernel_size, self.stride, self.pad, self.dilation = kernel_size, stride, pad, dilation
        self.offset_scale = offset_scale
        self.use_compiled = use_compiled
        self.dw_conv = nn.Conv2d(channels, channels, dw, padding=(dw - 1) // 2, groups=channels)
        self.dw_norm = nn.LayerNorm(channels, eps=1e-6)
        self.dw_act = nn.GELU()
        self.offset = nn.Linear(channels, group * kernel_size * kernel_size * 2)
        self.mask = nn.Linear(channels, group * kernel_size * kernel_size)
        self.input_proj = nn.Linear(channels, channels)
        self.output_proj = nn.Linear(channels, channels)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Official initialisation: zero offsets and modulation logits, Xavier projections."""
        for lin in (self.offset, self.mask):
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)
        for lin in (self.input_proj, self.output_proj):
            nn.init.xavier_uniform_(lin.weight)
            nn.init.zeros_(lin.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, h, w, _ = x.shape
        value = self.input_proj(x)
        feat = self.dw_act(self.dw_norm(self.dw_conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)))
        offset = self.offset(feat)
        mask = F.softmax(self.mask(feat).reshape(n, h, w, self.group, -1), dim=-1).reshape(n, h, w, -1)
        k = self.kernel_size
        out = dcnv3_core(value, offset, mask.to(value.dtype), k, k, self.stride, self.stride, self.pad, self.pad,
                         self.dilation, self.dilation, self.group, self.group_channels, self.offset_scale,
                         use_compiled=self.use_compiled)
        return self.output_proj(out)
