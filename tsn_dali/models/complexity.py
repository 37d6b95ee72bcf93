"""Counting a model's multiply-accumulates and parameters in mmengine's convention (the rules
and their source: tsn_dali.flops, the command that makes MMAction2's table with them).

``FlopCounter`` is a ``TorchDispatchMode``: inside it, every aten op that ``OP_RULES`` names adds
its MACs to its category; run it over one forward on the meta device for shapes only.
"""
from __future__ import annotations

from collections import Counter
from math import prod
from typing import Callable, Dict, List, Optional

import torch
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten


def _shape(t) -> List[int]:
    return list(t.shape)


def _conv(args, kwargs, out) -> int:
    x, w = args[0], args[1]
    transposed = bool(args[6]) if len(args) > 6 else False
    positions = _shape(x)[2:] if transposed else _shape(out)[2:]
    return x.shape[0] * prod(_shape(w)) * prod(positions)


def _mm(args, kwargs, out) -> int:
    a, b = args[0], args[1]
    return a.shape[0] * a.shape[1] * b.shape[1]


def _addmm(args, kwargs, out) -> int:
    return _mm(args[1:], kwargs, out)


def _bmm(args, kwargs, out) -> int:
    a, b = args[0], args[1]
    return a.shape[0] * a.shape[1] * a.shape[2] * b.shape[2]


def _baddbmm(args, kwargs, out) -> int:
    return _bmm(args[1:], kwargs, out)


def _batch_norm(training_index: Optional[int]) -> Callable:
    """mmengine: eval BN 2 per element with affine (1 without); training BN 5 (4)."""
    def count(args, kwargs, out) -> int:
        affine = len(args) > 1 and args[1] is not None
        training = training_index is not None and bool(args[training_index])
        if training:
            return args[0].numel() * (5 if affine else 4)
        return args[0].numel() * (2 if affine else 1)
    return count


def _layer_norm(weight_index: int) -> Callable:
    def count(args, kwargs, out) -> int:
        weight = args[weight_index] if len(args) > weight_index else None
        return args[0].numel() * (5 if weight is not None else 4)
    return count


def _input_elements(args, kwargs, out) -> int:
    return args[0].numel()


def _sdpa(args, kwargs, out) -> int:
    q, k, v = args[0], args[1], args[2]
    batch = prod(_shape(q)[:-2])
    length, source = q.shape[-2], k.shape[-2]
    return batch * length * source * (q.shape[-1] + v.shape[-1])


# aten op -> (category, MAC rule). One explicit table, mmengine's categories.
OP_RULES: Dict[object, tuple] = {
    aten.convolution.default: ("conv", _conv),
    aten.mm.default: ("linear/matmul", _mm),
    aten.addmm.default: ("linear/matmul", _addmm),
    aten.bmm.default: ("linear/matmul", _bmm),
    aten.baddbmm.default: ("linear/matmul", _baddbmm),
    aten.native_batch_norm.default: ("batch_norm", _batch_norm(5)),
    aten.cudnn_batch_norm.default: ("batch_norm", _batch_norm(5)),
    aten._native_batch_norm_legit_no_training.default: ("batch_norm", _batch_norm(None)),
    aten.native_layer_norm.default: ("layer/group_norm", _layer_norm(2)),
    aten.native_group_norm.default: ("layer/group_norm", _layer_norm(1)),
    aten._adaptive_avg_pool2d.default: ("avg_pool", _input_elements),
    aten.mean.dim: ("avg_pool", _input_elements),
}
for _name in ("_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_efficient_attention",
              "_scaled_dot_product_flash_attention", "_scaled_dot_product_cudnn_attention"):
    if hasattr(aten, _name):
        OP_RULES[getattr(aten, _name).default] = ("linear/matmul", _sdpa)


class FlopCounter(TorchDispatchMode):
    """Counts MACs per category (``OP_RULES``) of the aten ops run inside it."""

    def __init__(self):
        super().__init__()
        self.counts: Counter = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        rule = OP_RULES.get(func)
        if rule is not None:
            category, count = rule
            self.counts[category] += int(count(args, kwargs or {}, out))
        return out


@torch.no_grad()
def count_flops(model: torch.nn.Module, clips: torch.Tensor) -> Counter:
    """MACs by category of ``model(clips)`` in eval mode (see the module docstring)."""
    was_training = model.training
    model.eval()
    try:
        with FlopCounter() as counter:
            model(clips)
    finally:
        model.train(was_training)
    return counter.counts


def count_params(model: torch.nn.Module) -> int:
    """Parameters (buffers excluded), as mmengine's parameter count."""
    return sum(p.numel() for p in model.parameters())


__all__ = ["FlopCounter", "OP_RULES", "count_flops", "count_params"]
