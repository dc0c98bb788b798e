"""Run an ONNX graph as a ``torch.nn.Module``, without onnx2torch or torchvision.

Only the op set of the shipped YOLOX-style detectors is supported (see :data:`SUPPORTED_OPS`);
anything else raises :class:`UnsupportedOnnxOp` naming the op and the node, at conversion time.

Everything static is resolved once in ``__init__``: Conv weights become ``nn.Conv2d`` layers,
other initializers read at run time become buffers (float32, so ``.half()`` and ``.to()`` convert
them), and the constant inputs of Slice, Reshape and Resize become plain Python values. ``forward``
then walks a fixed list of steps in topological order with no data-dependent Python branches, so
the module works with ``channels_last``, fp16 and ``torch.compile``.

Batch: exporters write batch-1 graphs whose Reshape shape constants start with a literal 1. With
``batch_dynamic=True`` that leading 1 becomes 0 ("copy this dim from the input"), the same fix as
:func:`serve_apps.detector.onnx_runner.make_batch_dynamic`, so a batch of N runs as N images.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import helper, numpy_helper
from torch import nn

_INT64_MAX = np.iinfo(np.int64).max


class UnsupportedOnnxOp(NotImplementedError):
    """The graph uses an op, or an attribute value of an op, that this converter does not run."""

    def __init__(self, op_type: str, node_name: str, detail: str = "") -> None:
        self.op_type = op_type
        self.node_name = node_name
        reason = f": {detail}" if detail else f"; supported ops: {', '.join(SUPPORTED_OPS)}"
        super().__init__(f"ONNX op {op_type!r} (node {node_name!r}) is not supported by onnx_to_torch{reason}")


@dataclass(frozen=True)
class _Node:
    """The parts of an ``onnx.NodeProto`` a builder needs, attributes as Python values."""

    op_type: str
    domain: str
    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: dict[str, Any]

    def unsupported(self, detail: str) -> UnsupportedOnnxOp:
        return UnsupportedOnnxOp(self.op_type, self.name, detail)


class _BuildContext:
    """Constant values known at conversion time: initializers and Constant-node outputs."""

    def __init__(self, constants: dict[str, np.ndarray], batch_dynamic: bool) -> None:
        self.constants = constants
        self.batch_dynamic = batch_dynamic

    def const(self, node: _Node, index: int) -> np.ndarray | None:
        """The value of ``node``'s input ``index``; ``None`` when that optional input is absent.

        Raises UnsupportedOnnxOp if the input is computed at run time: shapes, slice bounds and
        scales must be constant here so that ``forward`` has no data-dependent control flow.
        """
        if index >= len(node.inputs) or node.inputs[index] == "":
            return None
        name = node.inputs[index]
        if name not in self.constants:
            raise node.unsupported(f"input {index} ({name!r}) must be a constant, not computed at run time")
        return self.constants[name]


class _Fn(nn.Module):
    """A stateless op: ``fn(*inputs, **kwargs)`` with its static arguments bound at conversion."""

    def __init__(self, op_type: str, fn: Callable[..., torch.Tensor], **kwargs: Any) -> None:
        super().__init__()
        self.op_type = op_type
        self.fn = fn
        self.kwargs = kwargs

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.fn(*inputs, **self.kwargs)

    def extra_repr(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.kwargs.items())
        return f"{self.op_type}{', ' if args else ''}{args}"


# ----------------------------------------------------------------------------------- the ops
# Each builder turns one node into (module, runtime tensor inputs). Static inputs are read from ctx.


def _pairs_of_pads(node: _Node, pads: Sequence[int]) -> tuple[int, int, int, int]:
    """ONNX 2-D ``pads`` ``[h_begin, w_begin, h_end, w_end]`` as ``F.pad``'s ``(left, right, top, bottom)``."""
    if len(pads) != 4:
        raise node.unsupported(f"only 2-D pads are supported, got {list(pads)}")
    h0, w0, h1, w1 = (int(p) for p in pads)
    return (w0, w1, h0, h1)


def _check_auto_pad(node: _Node) -> None:
    auto_pad = node.attrs.get("auto_pad", "NOTSET")
    if auto_pad not in ("NOTSET", "VALID"):
        raise node.unsupported(f"auto_pad={auto_pad!r} is not supported; export with explicit pads")


def _build_conv(node: _Node, ctx: _BuildContext) -> tuple[nn.Module, list[str]]:
    _check_auto_pad(node)
    weight = ctx.const(node, 1)
    bias = ctx.const(node, 2)
    if weight is None or weight.ndim != 4:
        raise node.unsupported("only 2-D convolutions with a constant weight are supported")
    groups = int(node.attrs.get("group", 1))
    kernel = tuple(int(k) for k in node.attrs.get("kernel_shape", weight.shape[2:]))
    if kernel != weight.shape[2:]:
        raise node.unsupported(f"kernel_shape {kernel} does not match the weight's {weight.shape[2:]}")
    left, right, top, bottom = _pairs_of_pads(node, node.attrs.get("pads", (0, 0, 0, 0)))
    symmetric = left == right and top == bottom
    conv = nn.Conv2d(
        in_channels=weight.shape[1] * groups,
        out_channels=weight.shape[0],
        kernel_size=kernel,
        stride=tuple(node.attrs.get("strides", (1, 1))),
        padding=(top, left) if symmetric else 0,
        dilation=tuple(node.attrs.get("dilations", (1, 1))),
        groups=groups,
        bias=bias is not None,
    )
    conv.weight = nn.Parameter(torch.from_numpy(weight.astype(np.float32)), requires_grad=False)
    if bias is not None:
        conv.bias = nn.Parameter(torch.from_numpy(bias.astype(np.float32)), requires_grad=False)
    module: nn.Module = conv if symmetric else nn.Sequential(nn.ZeroPad2d((left, right, top, bottom)), conv)
    return module, [node.inputs[0]]


def _build_unary(fn: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[_Node, _BuildContext], Any]:
    def build(node: _Node, ctx: _BuildContext) -> tuple[nn.Module, list[str]]:
        return _Fn(node.op_type, fn), [node.inputs[0]]

    return build


def _build_binary(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Callable[[_Node, _BuildContext], Any]:
    def build(node: _Node, ctx: _BuildContext) -> tuple[nn.Module, list[str]]:
        return _Fn(node.op_type, fn), [node.inputs[0], node.inputs[1]]  # numpy broadcasting == torch's

    return build


def _concat(*xs: torch.Tensor, dim: int) -> torch.Tensor:
    return torch.cat(xs, dim=dim)


def _build_concat(node: _Node, ctx: _BuildContext) -> tuple[nn.Module, list[str]]:
    return _Fn("Concat", _concat, dim=int(node.attrs["axis"])), list(node.inputs)


def _slice(x: torch.Tensor, *, index: tuple[Any, ...]) -> torch.Tensor:
    return x[index]


def _build_slice(node: _Node, ctx: _BuildContext) -> tuple[nn.Module, list[str]]:
    if "starts" in node.attrs:  # Slice-1: bounds as attributes
        starts, ends = node.attrs["starts"], node.attrs["ends"]
        axes, steps = node.attrs.get("axes"), None
    else:  # Slice-10+: bounds as (constant) inputs
        starts, ends, axes, steps = (ctx.const(node, i) for i in (1, 2, 3, 4))
    starts = [int(s) for s in np.asarray(starts).ravel()]
    ends = [int(e) for e in np.asarray(ends).ravel()]
    axes = list(range(len(starts))) if axes is None else [int(a) for a in np.asarray(axes).ravel()]
    steps = [1] * len(starts) if steps is None else [int(s) for s in np.asarray(steps).ravel()]
    if any(s <= 0 for s in steps):
        raise node.unsupported(f"only positive steps are supported, got {steps}")
    if not (all(a >= 0 for a in axes) or all(a < 0 for a in axes)):
        raise node.unsupported(f"axes must be all non-negative or all negative, got {axes}")
    # Python slicing clamps out-of-range bounds exactly as ONNX Slice does for positive steps.
    by_axis = {
        a: slice(s, None if e >= _INT64_MAX // 2 else e, st)
        for a, s, e, st in zip(axes, starts, ends, steps, strict=True)
    }
    if axes[0] >= 0:
        index: tuple[Any, ...] = tuple(by_axis.get(a, slice(None)) for a in range(max(axes) + 1))
    else:
        index = (Ellipsis, *(by_axis.get(a, slice(None)) for a in range(min(axes), 0)))
    return _Fn("Slice", _slice, index=index), [node.inputs[0]]


def _reshape(x: torch.Tensor, *, shape: tuple[int, ...]) -> torch.Tensor:
    # ONNX: 0 copies the input's dim at that position, -1 is inferred.
    return x.reshape([x.shape[i] if s == 0 else s for i, s in enumerate(shape)])


def _build_reshape(node: _Node, ctx: _BuildContext) -> tuple[nn.Module, list[str]]:
    if int(node.attrs.get("allowzero", 0)) != 0:
        raise node.unsupported("allowzero=1 is not supported")
    shape_value = ctx.const(node, 1)
    if shape_value is None:
        raise node.unsupported("the target shape input is missing")
    shape = [int(s) for s in shape_value.ravel()]
    if ctx.batch_dynamic and len(shape) > 0 and shape[0] == 1:
        shape[0] = 0  # batch-1 export: take the batch from the input
    return _Fn("Reshape", _reshape, shape=tuple(shape)), [node.inputs[0]]


def _transpose(x: torch.Tensor, *, perm: tuple[int, ...] | None) -> torch.Tensor:
    return x.permute(perm if perm is not None else tuple(reversed(range(x.dim()))))


def _build_transpose(node: _Node, ctx: _BuildContext) -> tuple[nn.Module, list[str]]:
    perm = node.attrs.get("perm")
    return _Fn("Transpose", _transpose, perm=None if perm is None else tuple(int(p) for p in perm)), [node.inputs[0]]


def _max_pool_padded(x: torch.Tensor, *, pad: tuple[int, int, int, int], **pool: Any) -> torch.Tensor:
    return F.max_pool2d(F.pad(x, pad, value=float("-inf")), **pool)


def _build_max_pool(node: _Node, ctx: _BuildContext) -> tuple[nn.Module, list[str]]:
    _check_auto_pad(node)
    if len(node.outputs) > 1 and node.outputs[1] != "":
        raise node.unsupported("the Indices output is not supported")
    if int(node.attrs.get("storage_order", 0)) != 0:
        raise node.unsupported("storage_order=1 is not supported")
    kernel = tuple(int(k) for k in node.attrs["kernel_shape"])
    if len(kernel) != 2:
        raise node.unsupported(f"only 2-D pooling is supported, got kernel_shape {kernel}")
    left, right, top, bottom = _pairs_of_pads(node, node.attrs.get("pads", (0, 0, 0, 0)))
    pool: dict[str, Any] = {
        "kernel_size": kernel,
        "stride": tuple(int(s) for s in node.attrs.get("strides", (1, 1))),
        "dilation": tuple(int(d) for d in node.attrs.get("dilations", (1, 1))),
        "ceil_mode": bool(node.attrs.get("ceil_mode", 0)),
    }
    if left == right and top == bottom and 2 * top <= kernel[0] and 2 * left <= kernel[1]:
        return _Fn("MaxPool", F.max_pool2d, padding=(top, left), **pool), [node.inputs[0]]
    return _Fn("MaxPool", _max_pool_padded, pad=(left, right, top, bottom), **pool), [node.inputs[0]]


def _build_resize(node: _Node, ctx: _BuildContext) -> tuple[nn.Module, list[str]]:
    mode = node.attrs.get("mode", b"nearest")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    transform = node.attrs.get("coordinate_transformation_mode", b"half_pixel")
    transform = transform.decode() if isinstance(transform, bytes) else transform
    nearest_mode = node.attrs.get("nearest_mode", b"round_prefer_floor")
    nearest_mode = nearest_mode.decode() if isinstance(nearest_mode, bytes) else nearest_mode
    if len(node.inputs) == 2:  # Resize-10: (X, scales)
        scales, sizes = ctx.const(node, 1), None
    else:  # Resize-11+: (X, roi, scales, sizes); an empty tensor means "absent"
        scales, sizes = ctx.const(node, 2), ctx.const(node, 3)
    if scales is not None and scales.size == 0:
        scales = None
    # ONNX nearest + asymmetric + floor: src = floor(dst / scale), exactly torch's "nearest".
    if (mode, transform, nearest_mode) != ("nearest", "asymmetric", "floor"):
        raise node.unsupported(
            f"only mode='nearest' with coordinate_transformation_mode='asymmetric' and nearest_mode='floor' "
            f"is supported, got {mode!r}, {transform!r}, {nearest_mode!r}"
        )
    if scales is not None:
        factors = [float(s) for s in scales.ravel()]
        if len(factors) != 4 or factors[:2] != [1.0, 1.0]:
            raise node.unsupported(f"only spatial scaling of an NCHW tensor is supported, got scales {factors}")
        kwargs: dict[str, Any] = {"scale_factor": tuple(factors[2:]), "recompute_scale_factor": False}
    elif sizes is not None and sizes.size == 4:
        kwargs = {"size": tuple(int(s) for s in sizes.ravel()[2:])}
    else:
        raise node.unsupported("either constant scales or 4 constant sizes are needed")
    return _Fn("Resize", F.interpolate, mode="nearest", **kwargs), [node.inputs[0]]


_BUILDERS: dict[str, Callable[[_Node, _BuildContext], tuple[nn.Module, list[str]]]] = {
    "Add": _build_binary(torch.add),
    "Concat": _build_concat,
    "Conv": _build_conv,
    "MaxPool": _build_max_pool,
    "Mul": _build_binary(torch.mul),
    "Reshape": _build_reshape,
    "Resize": _build_resize,
    "Sigmoid": _build_unary(torch.sigmoid),
    "Slice": _build_slice,
    "Transpose": _build_transpose,
}
SUPPORTED_OPS: tuple[str, ...] = (*sorted(_BUILDERS), "Constant")


# --------------------------------------------------------------------------------- the graph


def _constant_node_value(node: _Node) -> np.ndarray:
    if "value" in node.attrs:
        return numpy_helper.to_array(node.attrs["value"])
    for key, dtype in (("value_float", np.float32), ("value_floats", np.float32)):
        if key in node.attrs:
            return np.asarray(node.attrs[key], dtype=dtype)
    for key in ("value_int", "value_ints"):
        if key in node.attrs:
            return np.asarray(node.attrs[key], dtype=np.int64)
    raise node.unsupported(f"Constant with attributes {sorted(node.attrs)} is not supported")


def _as_node(proto: onnx.NodeProto, index: int) -> _Node:
    return _Node(
        op_type=proto.op_type,
        domain=proto.domain,
        name=proto.name or f"{proto.op_type}_{index}",
        inputs=tuple(proto.input),
        outputs=tuple(proto.output),
        attrs={a.name: helper.get_attribute_value(a) for a in proto.attribute},
    )


def _topological(nodes: list[_Node], available: set[str]) -> list[_Node]:
    """Nodes in an order where every input is produced before it is read (ONNX files usually are)."""
    ready = set(available)
    pending = list(nodes)
    ordered: list[_Node] = []
    while pending:
        still: list[_Node] = []
        for node in pending:
            if all(i == "" or i in ready for i in node.inputs):
                ordered.append(node)
                ready.update(node.outputs)
            else:
                still.append(node)
        if len(still) == len(pending):
            missing = sorted({i for n in still for i in n.inputs if i and i not in ready})
            raise ValueError(f"ONNX graph has a cycle or undefined inputs: {missing[:5]}")
        pending = still
    return ordered


class OnnxGraphModule(nn.Module):
    """An ONNX graph as a torch module: ``forward(*graph_inputs)`` returns the graph output(s).

    Args:
        model: The ONNX model. Only the default (``ai.onnx``) domain ops in :data:`SUPPORTED_OPS`.
        batch_dynamic: Rewrite a leading 1 in Reshape shape constants to "copy from the input",
            so a batch-1 export runs any batch size (see the module docstring).
    """

    def __init__(self, model: onnx.ModelProto, *, batch_dynamic: bool = True) -> None:
        super().__init__()
        graph = model.graph
        constants: dict[str, np.ndarray] = {}
        for init in graph.initializer:
            value = numpy_helper.to_array(init)
            constants[init.name] = value.astype(np.float32) if value.dtype.kind == "f" else value
        self.input_names: tuple[str, ...] = tuple(i.name for i in graph.input if i.name not in constants)
        self.output_names: tuple[str, ...] = tuple(o.name for o in graph.output)

        nodes = [_as_node(proto, k) for k, proto in enumerate(graph.node)]
        for node in nodes:
            if node.op_type == "Constant" and node.attrs.get("sparse_value") is None:
                constants[node.outputs[0]] = _constant_node_value(node)
            if node.domain not in ("", "ai.onnx"):
                raise node.unsupported(f"domain {node.domain!r} is not supported")
            if node.op_type != "Constant" and node.op_type not in _BUILDERS:
                raise UnsupportedOnnxOp(node.op_type, node.name)
        ctx = _BuildContext(constants, batch_dynamic)

        steps: list[nn.Module] = []
        wiring: list[tuple[tuple[str, ...], tuple[str, ...]]] = []
        for node in _topological([n for n in nodes if n.op_type != "Constant"], set(constants) | set(self.input_names)):
            module, tensor_inputs = _BUILDERS[node.op_type](node, ctx)
            steps.append(module)
            wiring.append((tuple(tensor_inputs), (node.outputs[0],)))
        self.steps = nn.ModuleList(steps)

        # Constants read as tensors at run time (e.g. a Mul by a constant, a constant output).
        runtime_reads = {name for ins, _ in wiring for name in ins} | set(self.output_names)
        self._buffer_names: dict[str, str] = {}
        for k, name in enumerate(sorted(runtime_reads & set(constants))):
            buffer = f"const_{k}"
            self.register_buffer(buffer, torch.from_numpy(np.array(constants[name])))
            self._buffer_names[name] = buffer

        # After each step, drop the values no later step reads, so peak memory stays low.
        last_use: dict[str, int] = {}
        for k, (ins, _) in enumerate(wiring):
            for name in ins:
                last_use[name] = k
        frees: list[list[str]] = [[] for _ in wiring]
        for name, k in last_use.items():
            if name not in self.output_names:
                frees[k].append(name)
        self._wiring: tuple[tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]], ...] = tuple(
            (ins, outs, tuple(free)) for (ins, outs), free in zip(wiring, frees, strict=True)
        )

    @classmethod
    def from_path(cls, path: str | Path, **kwargs: Any) -> OnnxGraphModule:
        return cls(onnx.load(str(path)), **kwargs)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        if len(inputs) != len(self.input_names):
            raise TypeError(f"expected {len(self.input_names)} inputs {self.input_names}, got {len(inputs)}")
        env: dict[str, torch.Tensor] = dict(zip(self.input_names, inputs, strict=True))
        for name, buffer in self._buffer_names.items():
            env[name] = getattr(self, buffer)
        for step, (ins, outs, frees) in zip(self.steps, self._wiring, strict=True):
            env[outs[0]] = step(*[env[name] for name in ins])
            for name in frees:
                del env[name]
        outputs = tuple(env[name] for name in self.output_names)
        return outputs[0] if len(outputs) == 1 else outputs


def op_types(model: onnx.ModelProto) -> dict[str, int]:
    """How many nodes of each op type the graph has."""
    counts: dict[str, int] = {}
    for node in model.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return dict(sorted(counts.items()))


__all__ = ["SUPPORTED_OPS", "OnnxGraphModule", "UnsupportedOnnxOp", "op_types"]
