"""The call into the official DCNv3 CUDA extension, checked on CPU against fake extensions with the official
signatures (``ops_dcnv3/src/dcnv3.h`` of OpenGVLab/InternImage): 1.1 takes a trailing ``remove_center`` after
``im2col_step`` in ``dcnv3_forward`` and ``dcnv3_backward``; 1.0 does not. Python functions with exactly those
positional parameters raise ``TypeError`` on any other arity, as the pybind11 bindings do."""
from __future__ import annotations

import importlib.metadata
import sys
import types

import pytest
import torch

from segarena.models.zoo import _dcnv3
from segarena.models.zoo._dcnv3 import DCNv3, dcnv3_core, dcnv3_core_pytorch


def _fake_extension(with_remove_center: bool) -> tuple[types.ModuleType, list[tuple]]:
    calls: list[tuple] = []

    def _ref(x, offset, mask, kh, kw, sh, sw, ph, pw, dh, dw, g, gc, scale):
        return dcnv3_core_pytorch(x, offset, mask, kh, kw, sh, sw, ph, pw, dh, dw, g, gc, scale)

    def _grads(x, offset, mask, args, grad_output):
        with torch.enable_grad():  # the kernel's backward is called under no_grad
            leaves = [t.detach().clone().requires_grad_(True) for t in (x, offset, mask)]
            return list(torch.autograd.grad(_ref(*leaves, *args), leaves, grad_output))

    if with_remove_center:
        def dcnv3_forward(input, offset, mask, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w,  # noqa: A002
                          dilation_h, dilation_w, group, group_channels, offset_scale, im2col_step, remove_center):
            assert isinstance(im2col_step, int) and isinstance(remove_center, bool)
            args = (kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, group,
                    group_channels, offset_scale)
            calls.append(("forward", args, im2col_step, remove_center))
            return _ref(input, offset, mask, *args)

        def dcnv3_backward(input, offset, mask, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w,  # noqa: A002
                           dilation_h, dilation_w, group, group_channels, offset_scale, grad_output, im2col_step,
                           remove_center):
            assert isinstance(grad_output, torch.Tensor) and isinstance(remove_center, bool)
            args = (kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, group,
                    group_channels, offset_scale)
            calls.append(("backward", args, im2col_step, remove_center))
            return _grads(input, offset, mask, args, grad_output)
    else:
        def dcnv3_forward(input, offset, mask, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w,  # noqa: A002
                          dilation_h, dilation_w, group, group_channels, offset_scale, im2col_step):
            args = (kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, group,
                    group_channels, offset_scale)
            calls.append(("forward", args, im2col_step, None))
            return _ref(input, offset, mask, *args)

        def dcnv3_backward(input, offset, mask, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w,  # noqa: A002
                           dilation_h, dilation_w, group, group_channels, offset_scale, grad_output, im2col_step):
            args = (kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, group,
                    group_channels, offset_scale)
            calls.append(("backward", args, im2col_step, None))
            return _grads(input, offset, mask, args, grad_output)

    mod = types.ModuleType("DCNv3")
    mod.dcnv3_forward, mod.dcnv3_backward = dcnv3_forward, dcnv3_backward
    return mod, calls


@pytest.fixture
def install_fake(monkeypatch):
    def install(version: str, with_remove_center: bool):
        mod, calls = _fake_extension(with_remove_center)
        monkeypatch.setitem(sys.modules, "DCNv3", mod)
        real_version = importlib.metadata.version
        monkeypatch.setattr(importlib.metadata, "version",
                            lambda name: version if name == "DCNv3" else real_version(name))
        _dcnv3._compiled_ext.cache_clear()
        return calls

    yield install
    _dcnv3._compiled_ext.cache_clear()


def _inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 5, 6, 2 * 3, generator=g, dtype=torch.float64)
    offset = torch.randn(2, 5, 6, 2 * 9 * 2, generator=g, dtype=torch.float64)
    mask = torch.softmax(torch.randn(2, 5, 6, 2, 9, generator=g, dtype=torch.float64), -1).reshape(2, 5, 6, 18)
    return x, offset, mask


@pytest.mark.parametrize("version,with_rc", [("1.1", True), ("1.0", False)])
def test_compiled_call_matches_the_official_signature(install_fake, version, with_rc):
    calls = install_fake(version, with_rc)
    assert _dcnv3.has_compiled_dcnv3()
    x, offset, mask = (t.requires_grad_(True) for t in _inputs())
    args = (3, 3, 1, 1, 1, 1, 1, 1, 2, 3, 1.0)
    out = dcnv3_core(x, offset, mask, *args, use_compiled=True)
    out.square().sum().backward()
    assert [c[0] for c in calls] == ["forward", "backward"]
    for _, got_args, step, rc in calls:
        assert got_args == args and step == 256
        assert rc is (False if with_rc else None)
    # the gradients came back through the kernel wrapper to every input, equal to the PyTorch path's
    x2, o2, m2 = (t.detach().clone().requires_grad_(True) for t in (x, offset, mask))
    dcnv3_core_pytorch(x2, o2, m2, *args).square().sum().backward()
    for a, b in ((x, x2), (offset, o2), (mask, m2)):
        torch.testing.assert_close(a.grad, b.grad)


def test_the_old_call_without_remove_center_is_refused_by_a_1_1_kernel():
    """The arity the module used before this fix: a 1.1 kernel rejects it (what the issue saw on CUDA)."""
    mod, _ = _fake_extension(True)
    x, offset, mask = _inputs()
    with pytest.raises(TypeError):
        mod.dcnv3_forward(x, offset, mask, 3, 3, 1, 1, 1, 1, 1, 1, 2, 3, 1.0, 256)


def test_dcnv3_module_runs_through_the_fake_1_1_kernel(install_fake):
    calls = install_fake("1.1", True)
    torch.manual_seed(0)
    m = DCNv3(8, group=2, use_compiled=True).double()
    ref = DCNv3(8, group=2, use_compiled=False).double()
    ref.load_state_dict(m.state_dict())
    x = torch.randn(1, 6, 7, 8, dtype=torch.float64)
    torch.testing.assert_close(m(x), ref(x))
    assert calls and calls[0][3] is False


def test_unknown_version_counts_as_1_1(monkeypatch):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", missing)
    assert _dcnv3.compiled_dcnv3_version() == 1.1
    assert _dcnv3._kernel_tail(64, False) == (64, False)
