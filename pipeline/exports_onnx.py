"""Serving export of fitted statistics as an ONNX graph that reproduces :func:`pipeline.apply`.

One input ``X`` of shape ``[N, F]`` (the features in the export's order, listed
in the model's metadata), one output ``Z`` of the same shape, plus
``n_infinite``, the number of infinite values in ``X``.  The graph computes in
float64 with the kernel's numbers and order of operations (``((X - mean) -
residual) / std``; constant features ``X - X``), so it agrees with ``apply``
to the last bit where the runtime's arithmetic is IEEE.  ``dtype``:

* ``float64``: float64 in, float64 out;
* ``float32``: float32 in, cast to float64 exactly, float32 out (rounded once),
  as ``apply(dtype="preserve")`` treats a float32 column;
* ``preserve``: ``float32`` when every exported feature is stored as float16 or
  float32, else ``float64``.

A graph cannot raise: an infinite input gives NaN in ``Z`` (``apply`` makes it
missing with ``inf="null"`` and raises with ``inf="error"``); the model's
metadata records the policy, and ``n_infinite`` lets the caller enforce it.
64-bit integer features past 2**53 cannot travel exactly in a float64 tensor
and are refused (export SQL for them, or leave them out with ``features``).

``minmax`` is ``(X - min) / (max - min)`` (constant features ``X - X``).  After
scaling, as :mod:`pipeline.finish`: ``clip`` clamps to ``[-K, K]`` (NaN untouched),
``fill_missing`` replaces NaN (a missing value of a tensor), and
``missing_indicator`` adds a boolean output ``missing`` of shape ``[N, F]`` (a
tensor has one type, so the indicators cannot sit between the features of ``Z``).

Needs the ``onnx`` package (``pip install 'dask-zscore[onnx]'``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from .errors import InputError, option
from .exports import export_header, plan_for_export
from .finish import FinishOptions

__all__ = ["IR_VERSION", "OPSET", "to_onnx"]

OPSET = 17  # Where, IsInf, ReduceSum with axes as an input: every runtime since 2022
IR_VERSION = 8


def to_onnx(stats: Any, *, mode: str = "standard", dtype: str = "float64",
            features: Sequence[str] | None = None, fill_missing: float | None = None,
            missing_indicator: bool = False, clip: float | None = None) -> bytes:
    """The serialized ONNX model (``ModelProto`` bytes) of ``apply(df, stats, mode=...)``.

    Parameters
    ----------
    stats : FittedStats
    mode : {"standard", "scale", "center"}
    dtype : {"float64", "float32", "preserve"}
        The tensor type of ``X`` and ``Z`` (see the module docstring).
    features : list of str, optional
        A subset of the statistics' features, in the order of ``X``'s columns.
    fill_missing, missing_indicator, clip
        As for :func:`pipeline.apply` (see the module docstring).

    Raises
    ------
    InputError
        Per-key statistics, an unknown mode or feature, or a 64-bit integer
        feature past 2**53.
    """
    try:
        import onnx
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:
        raise InputError("the ONNX export needs the onnx package: pip install "
                         "'dask-zscore[onnx]'") from None
    if dtype not in ("float64", "float32", "preserve"):
        raise InputError(f"unknown ONNX {option('dtype', dtype)}; expected float64, float32 "
                         "or preserve")
    finish = FinishOptions(fill_missing, missing_indicator, clip)
    plan = plan_for_export(stats, mode, "float64", features, finish)
    names = [c.name for c in plan.columns]
    for n in names:
        f = stats.features[n]
        if f.dtype in ("int64", "uint64") and max(abs(f.min), abs(f.max)) > 2**53:
            raise InputError(f"column '{n}' is {f.dtype} with values past 2**53, which a "
                             "float64 tensor cannot hold exactly; export SQL for it, or leave "
                             f"it out ({option('features')})", column=n)
    single = dtype == "float32" or (dtype == "preserve" and all(
        stats.features[n].dtype in ("float16", "float32") for n in names))
    const = np.array([bool(c.constant[-1]) for c in plan.columns])
    mean = np.array([c.mean[-1] for c in plan.columns], dtype=np.float64)
    std = np.where(const, 1.0, [c.std[-1] for c in plan.columns]).astype(np.float64)
    residual = np.array([c.residual[-1] for c in plan.columns], dtype=np.float64)
    if plan.mode == "minmax":  # the kernel's numbers: exact min, max - min rounded once
        mean = np.array([float(c.low[-1]) for c in plan.columns], dtype=np.float64)
        std, residual = np.array([c.span[-1] for c in plan.columns]), np.zeros_like(mean)
    nodes = _nodes(helper, plan.mode, single, bool(residual.any())) + _finish(helper, finish)
    nodes.append(helper.make_node("Cast", ["zf"], ["Z"], to=TensorProto.FLOAT) if single else
                 helper.make_node("Identity", ["zf"], ["Z"]))
    used = {i for n in nodes for i in n.input}
    k, fill = finish.clip or 0.0, finish.fill_missing or 0.0
    inits = [numpy_helper.from_array(a, name) for a, name in
             ((mean, "mean"), (std, "std"), (residual, "residual"), (const, "constant"),
              (np.array(np.nan), "nan"), (np.array(k), "k"), (np.array(-k), "minus_k"),
              (np.array(fill), "fill")) if name in used]
    io_type = TensorProto.FLOAT if single else TensorProto.DOUBLE
    graph = helper.make_graph(
        nodes, "zscore", [helper.make_tensor_value_info("X", io_type, ["N", len(names)])],
        [helper.make_tensor_value_info("Z", io_type, ["N", len(names)]),
         helper.make_tensor_value_info("n_infinite", TensorProto.INT64, []),
         *([helper.make_tensor_value_info("missing", TensorProto.BOOL, ["N", len(names)])]
           if missing_indicator else [])],
        initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              ir_version=IR_VERSION, producer_name="zscore",
                              producer_version=stats.tool_version or "")
    header = export_header(stats, plan, "onnx")
    header["dtype"] = "float32" if single else "float64"
    model.doc_string = "zscore: " + json.dumps(header)
    helper.set_model_props(model, {"zscore": json.dumps(header)})
    onnx.checker.check_model(model, full_check=True)
    return bytes(model.SerializeToString())


def _nodes(helper: Any, mode: str, single: bool, residual: bool) -> list[Any]:
    """The graph: the kernel's operations on the whole ``[N, F]`` tensor at once."""
    from onnx import TensorProto

    node = helper.make_node
    nodes = [node("Cast", ["X"], ["x"], to=TensorProto.DOUBLE)] if single else \
        [node("Identity", ["X"], ["x"])]
    if mode == "scale":
        nodes.append(node("Div", ["x", "std"], ["scaled"]))  # constants: std 1, x unchanged
    else:
        nodes.append(node("Sub", ["x", "mean"], ["d0"]))
        last = "d0"
        if residual:
            nodes.append(node("Sub", ["d0", "residual"], ["d1"]))
            last = "d1"
        if mode in ("standard", "minmax"):  # minmax: mean is the min, std is max - min
            nodes.append(node("Div", [last, "std"], ["d2"]))
            last = "d2"
        nodes += [node("Sub", ["x", "x"], ["zero"]),  # 0.0, NaN where x is NaN
                  node("Where", ["constant", "zero", last], ["scaled"])]
    nodes += [node("IsInf", ["x"], ["infinite"]),
              node("Where", ["infinite", "nan", "scaled"], ["z"]),
              node("Cast", ["infinite"], ["infinite64"], to=TensorProto.INT64),
              node("ReduceSum", ["infinite64"], ["n_infinite"], keepdims=0)]
    return nodes


def _finish(helper: Any, finish: FinishOptions) -> list[Any]:
    """Clip, then fill, ``z`` into ``zf`` (:mod:`pipeline.finish`); the ``missing`` output.

    Comparisons with NaN are false, so ``Where`` leaves NaN to the fill.
    """
    node = helper.make_node
    nodes, last = [], "z"
    if finish.missing_indicator:
        nodes.append(node("IsNaN", ["z"], ["missing"]))
    if finish.clip is not None:
        nodes += [node("Greater", ["z", "k"], ["above"]), node("Less", ["z", "minus_k"], ["below"]),
                  node("Where", ["above", "k", "z"], ["z_high"]),
                  node("Where", ["below", "minus_k", "z_high"], ["z_clip"])]
        last = "z_clip"
    if finish.fill_missing is not None:
        nodes += [node("IsNaN", [last], ["gap"]), node("Where", ["gap", "fill", last], ["z_fill"])]
        last = "z_fill"
    return [*nodes, node("Identity", [last], ["zf"])]
