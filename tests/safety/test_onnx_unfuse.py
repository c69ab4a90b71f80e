"""The unfused residual layer norms of the English stage (safety/onnx_unfuse.py).

onnxruntime's fused ``SkipLayerNormalization`` CPU kernel is about 8x slower than ``Add`` +
``LayerNormalization``; these tests check that the rewrite computes the same thing, that the
shipped graph has no fused node left, and that the session does not fuse them back at load.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from alize.safety.minilm import default_model_dir, open_session
from alize.safety.onnx_unfuse import FUSED_OP, unfuse_file, unfuse_skip_layer_norm

onnx = pytest.importorskip("onnx")
HIDDEN = 16


def _skip_layer_norm_model(with_bias: bool) -> object:
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inputs = ["x", "skip", "gamma", "beta"] + (["bias"] if with_bias else [])
    initializers = [
        numpy_helper.from_array(rng.normal(size=HIDDEN).astype(np.float32), name) for name in inputs[2:]
    ]
    node = helper.make_node(FUSED_OP, inputs, ["y"], name="sln", domain="com.microsoft", epsilon=1e-5)
    shape = [2, 3, HIDDEN]
    graph = helper.make_graph(
        [node],
        "g",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, shape),
            helper.make_tensor_value_info("skip", TensorProto.FLOAT, shape),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
        initializers,
    )
    return helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    )


def _run(path: Path, feeds: dict[str, np.ndarray]) -> np.ndarray:
    (out,) = open_session(path, threads=1).run(["y"], feeds)
    return np.asarray(out)


@pytest.mark.parametrize("with_bias", [True, False])
def test_unfused_graph_computes_the_same_values(tmp_path: Path, with_bias: bool) -> None:
    fused = tmp_path / "fused.onnx"
    onnx.save(_skip_layer_norm_model(with_bias), str(fused))
    unfused = tmp_path / "unfused.onnx"
    assert unfuse_file(fused, unfused) == 1
    ops = [n.op_type for n in onnx.load(str(unfused)).graph.node]
    assert FUSED_OP not in ops
    assert ops.count("LayerNormalization") == 1
    assert ops.count("Add") == (2 if with_bias else 1)
    rng = np.random.default_rng(1)
    feeds = {name: rng.normal(size=(2, 3, HIDDEN)).astype(np.float32) for name in ("x", "skip")}
    np.testing.assert_allclose(_run(unfused, feeds), _run(fused, feeds), atol=1e-5)


def test_nodes_whose_optional_outputs_are_used_are_refused() -> None:
    model = _skip_layer_norm_model(with_bias=True)
    model.graph.node[0].output.append("mean")  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="optional outputs"):
        unfuse_skip_layer_norm(model)


def test_the_shipped_graph_has_no_fused_layer_norm_and_the_session_keeps_it_so(tmp_path: Path) -> None:
    shipped = default_model_dir() / "model.onnx"
    ops = [n.op_type for n in onnx.load(str(shipped)).graph.node]
    assert FUSED_OP not in ops
    assert ops.count("LayerNormalization") == 12  # two per layer, six layers
    optimized = tmp_path / "optimized.onnx"
    open_session(shipped, threads=1, optimized_path=optimized)
    # without the disabled optimiser, onnxruntime fuses Add + LayerNormalization back at load
    assert FUSED_OP not in [n.op_type for n in onnx.load(str(optimized)).graph.node]
