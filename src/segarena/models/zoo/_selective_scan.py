"""Selective scan (the S6 recurrence of Mamba, Gu & Dao 2023) in plain PyTorch, with ``mamba_ssm``'s CUDA kernel
used when it is installed and the input lives on a GPU.

The recurrence, per channel ``d`` and state index ``n``::

    h_t = exp(delta_t * A) * h_{t-1} + delta_t * B_t * u_t
    y_t = C_t . h_t + D * u_t           (then y_t *= silu(z_t) if z is given)

It is a first-order linear recurrence ``h_t = a_t h_{t-1} + x_t``. We evaluate it with a chunked parallel scan:
inside chunks of ``chunk`` steps a Hillis-Steele doubling scan (``log2(chunk)`` vectorised steps), then the same
scan, recursively, over the states at the chunk ends, which are finally broadcast back into the chunks. Only
products of decays in (0, 1] are formed, never their inverses, so it is as stable as the sequential loop (no
overflow for large ``delta * |A|``) while needing ``O(log L)`` tensor operations instead of ``L`` Python steps.

Why not a log-space cumulative sum (``exp(S_t - S_s)``)? Factorising it as ``exp(S_t) * exp(-S_s)`` overflows in
float32 once a chunk's total decay exceeds ~88, and the unfactorised form needs a ``chunk x chunk`` matrix per
state. The doubling scan has neither problem.

Memory: the PyTorch path materialises all states ``[batch, d, n, L]`` (plus a few copies for autograd), as any
unfused implementation must. Training at 512x512 therefore wants ``mamba_ssm`` on a GPU (the fused kernel
recomputes states in its backward pass); the PyTorch path is exact and meant for CPU, tests and small inputs.
"""
from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F

__all__ = ["linear_scan", "mamba_ssm_available", "selective_scan", "selective_scan_torch"]


@functools.lru_cache(maxsize=1)
def _mamba_fn() -> Callable | None:
    try:  # optional: the fused CUDA kernel from the official Mamba package
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except Exception:  # noqa: BLE001 - ImportError, or a build without CUDA extensions
        return None
    return selective_scan_fn


def mamba_ssm_available() -> bool:
    """Whether ``mamba_ssm``'s fused selective-scan kernel can be imported."""
    return _mamba_fn() is not None


def _doubling_scan(a: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inclusive Hillis-Steele scan along the last dim with the operator (a1, x1) then (a2, x2) = (a1 a2, a2 x1 + x2).

    Returns the cumulative decays (product of ``a`` from the start) and the states started from zero.
    """
    n = a.shape[-1]
    k = 1
    while k < n:
        x = torch.cat([x[..., :k], x[..., k:] + a[..., k:] * x[..., :-k]], dim=-1)
        a = torch.cat([a[..., :k], a[..., k:] * a[..., :-k]], dim=-1)
        k *= 2
    return a, x


def linear_scan(a: torch.Tensor, x: torch.Tensor, chunk: int = 16) -> torch.Tensor:
    """States of ``h_t = a_t * h_{t-1} + x_t`` (``h_{-1} = 0``) along the last dim, by a chunked parallel scan."""
    if chunk < 2:
        raise ValueError("chunk must be at least 2")
    length = a.shape[-1]
    if length <= chunk:
        return _doubling_scan(a, x)[1]
    pad = (-length) % chunk
    if pad:  # identity elements: decay 1, input 0
        a = F.pad(a, (0, pad), value=1.0)
        x = F.pad(x, (0, pad), value=0.0)
    lead = a.shape[:-1]
    a = a.reshape(*lead, -1, chunk)
    x = x.reshape(*lead, -1, chunk)
    decay, local = _doubling_scan(a, x)  # per chunk, from a zero state at the chunk start
    ends = linear_scan(decay[..., -1], local[..., -1], chunk)  # true states at the chunk ends
    entering = F.pad(ends[..., :-1], (1, 0))  # state entering each chunk (zero for the first)
    h = local + decay * entering.unsqueeze(-1)
    return h.reshape(*lead, -1)[..., :length]


def _grouped(t: torch.Tensor, groups: int, d: int) -> torch.Tensor:
    """``B``/``C`` as ``[b, g, 1, n, L]`` (broadcast over the ``d // g`` channels of each group)."""
    if t.dim() == 3:  # [b, n, L]: one group
        return t[:, None, None]
    if t.dim() == 4:  # [b, g, n, L]
        if d % t.shape[1]:
            raise ValueError(f"{d} channels cannot be split into {t.shape[1]} groups")
        return t[:, :, None]
    raise ValueError(f"B and C must be [b, n, L] or [b, g, n, L], got {tuple(t.shape)}")


def selective_scan_torch(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                         C: torch.Tensor, D: torch.Tensor | None = None, z: torch.Tensor | None = None,
                         delta_bias: torch.Tensor | None = None, delta_softplus: bool = False,
                         chunk: int = 16) -> torch.Tensor:
    """Pure-PyTorch selective scan with ``mamba_ssm.selective_scan_fn``'s arguments and shapes.

    ``u``, ``delta``, ``z``: ``[b, d, L]``; ``A``: ``[d, n]`` (real); ``B``, ``C``: ``[b, n, L]`` or
    ``[b, g, n, L]`` with ``g`` dividing ``d`` (channel ``i`` uses group ``i // (d // g)``); ``D``,
    ``delta_bias``: ``[d]``. Computes in float32, returns ``u``'s dtype.
    """
    dtype = u.dtype
    b, d, length = u.shape
    u, delta = u.float(), delta.float()
    if delta_bias is not None:
        delta = delta + delta_bias.float()[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    groups = 1 if B.dim() == 3 else B.shape[1]
    Bg, Cg = _grouped(B.float(), groups, d), _grouped(C.float(), groups, d)
    n = A.shape[-1]
    dg = d // groups
    delta_g = delta.view(b, groups, dg, 1, length)
    decay = torch.exp(delta_g * A.float().view(1, groups, dg, n, 1))  # [b, g, dg, n, L]
    inp = (delta_g * u.view(b, groups, dg, 1, length)) * Bg
    h = linear_scan(decay, inp, chunk)
    y = (h * Cg).sum(dim=3).reshape(b, d, length)
    if D is not None:
        y = y + u * D.float()[:, None]
    if z is not None:
        y = y * F.silu(z.float())
    return y.to(dtype)


def selective_scan(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                   D: torch.Tensor | None = None, z: torch.Tensor | None = None,
                   delta_bias: torch.Tensor | None = None, delta_softplus: bool = False) -> torch.Tensor:
    """Selective scan: ``mamba_ssm``'s fused kernel for CUDA inputs when installed, else :func:`selective_scan_torch`."""
    fn = _mamba_fn() if u.is_cuda else None
    if fn is not None:
        return fn(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    return selective_scan_torch(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
