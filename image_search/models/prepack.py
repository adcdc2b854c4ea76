"""Linear layers with their weights prepacked for oneDNN, for the towers that run on a CPU.

An eager ``nn.Linear`` in bfloat16 hands oneDNN a plain weight on every call, and oneDNN
reorders it into the blocked layout its kernels (AMX tiles where the CPU has them) read, then
multiplies: for SigLIP 2 B/16's text tower that is ~170 MB of weights reordered per query. Done
once at load, as ``torch.compile`` with freezing does, but without compiling anything: the
layers call ``torch.ops.mkldnn._linear_pointwise`` on the packed weight. Results equal the eager
layer's to float rounding (``tests/test_prepack.py``); speed in README "Choosing a model".

A layer followed by a GELU (SigLIP's MLPs: ``fc1``, then ``activation_fn``) gets the GELU as
oneDNN's post-op, computed on the product before it is stored, and the separate activation goes:
eager bfloat16 GELU on a 64 x 3,072 activation took ~0.36 ms, 13% of a SigLIP 2 text query on the
Xeon. CLIP's quick GELU (x * sigmoid(1.702 x)) has no such post-op and stays as it is.
"""

from __future__ import annotations

import torch


class PackedLinear(torch.nn.Module):
    """``nn.Linear``'s forward on a weight reordered once for oneDNN (inference only)."""

    def __init__(self, linear: torch.nn.Linear, rows: int, gelu: str | None = None) -> None:
        """``gelu``: "tanh" or "none" (erf) to apply that GELU to the output, fused; None: nothing."""
        super().__init__()
        self.in_features = linear.in_features
        self.out_features = linear.out_features
        self.unary, self.algorithm = ("none", "") if gelu is None else ("gelu", gelu)
        weight = linear.weight.detach().contiguous()
        self.packed = torch.ops.mkldnn._reorder_linear_weight(weight, rows)
        self.bias = None if linear.bias is None else linear.bias.detach().contiguous()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features)
        if not flat.is_contiguous():
            flat = flat.contiguous()
        out = torch.ops.mkldnn._linear_pointwise(flat, self.packed, self.bias, self.unary, [], self.algorithm)
        return out.reshape(*x.shape[:-1], self.out_features)


def supported(dtype: torch.dtype) -> bool:
    """Whether oneDNN packs weights of this dtype on this CPU (bfloat16 needs AVX-512 or
    AVX-NE-CONVERT: checked by packing a small weight)."""
    if not torch.backends.mkldnn.is_available() or dtype not in (torch.bfloat16, torch.float32):
        return False
    try:
        PackedLinear(torch.nn.Linear(8, 8).to(dtype), 1)
    except RuntimeError:
        return False
    return True


def prepack(model: torch.nn.Module, rows: int) -> int:
    """Replace every ``nn.Linear`` of a CPU model, in place, by a :class:`PackedLinear` for inputs
    of about ``rows`` rows (the packing's hint); how many were replaced (0 where unsupported)."""
    first = next(model.parameters(), None)
    if first is None or first.device.type != "cpu" or not supported(first.dtype):
        return 0
    return _replace(model, rows)


def _replace(module: torch.nn.Module, rows: int) -> int:
    count = 0
    fused = _fusable_gelu(module)
    if fused is not None:
        fc1 = module.fc1
        assert isinstance(fc1, torch.nn.Linear)
        module.fc1 = PackedLinear(fc1, rows, gelu=fused)
        module.activation_fn = torch.nn.Identity()
        count += 1
    for name, child in list(module.named_children()):
        if type(child) is torch.nn.Linear and child.weight.dtype in (torch.bfloat16, torch.float32):
            setattr(module, name, PackedLinear(child, rows))
            count += 1
        else:
            count += _replace(child, rows)
    return count


def _fusable_gelu(module: torch.nn.Module) -> str | None:
    """ "tanh" or "none" when ``module`` is an MLP (``fc1``, ``activation_fn``, ``fc2``: transformers'
    CLIP and SigLIP MLPs, whose forward is fc2(activation_fn(fc1(x)))) and that activation computes
    GELU with that approximation (checked on numbers, not by its class)."""
    fc1, fc2 = getattr(module, "fc1", None), getattr(module, "fc2", None)
    act = getattr(module, "activation_fn", None)
    linears = type(fc1) is torch.nn.Linear and type(fc2) is torch.nn.Linear
    if not linears or not isinstance(act, torch.nn.Module):
        return None
    probe = torch.linspace(-6, 6, 97)
    with torch.inference_mode():
        out = act(probe)
        for algorithm in ("tanh", "none"):
            if torch.allclose(out, torch.nn.functional.gelu(probe, approximate=algorithm), atol=1e-6):
                return algorithm
    return None
