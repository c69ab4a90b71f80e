"""Undo onnxruntime's ``SkipLayerNormalization`` fusion in the shipped MiniLM graph (export time).

Why: onnxruntime's CPU kernel for the fused ``SkipLayerNormalization`` contrib op (residual add,
optional bias and layer norm in one node) is slow. Measured with onnxruntime 1.32 on the 2-core
AMD EPYC VM (AVX-512, VNNI), one thread, a (1, 128, 384) tensor: 220-230 µs per node, against
29 µs for a plain ``Add`` followed by the standard ``LayerNormalization`` op. The English stage's
graph has twelve of them per window, so they were a quarter of its kernel time (2.8 ms of
11.3 ms per 128-token window in onnxruntime's profiler) and about 5 ms of a 200-word text's two
windows. Unfused, a window took 7.7 ms in the same profile.

The rewrite is exact up to float rounding: each ``SkipLayerNormalization(x, skip, gamma, beta,
bias)`` becomes ``LayerNormalization(x + bias + skip, gamma, beta)`` with the same epsilon. The
int8 dynamic quantisation of the next matrix product can turn a rounding difference into a
slightly different activation scale; over the 836 dev rows the unfused graph's probabilities
agree with the float32 PyTorch model exactly as well as the fused one's (mean |diff| 0.00428 vs
0.00429, p99 0.067 both, 10.2 % of scores off by more than 0.01 both).

onnxruntime fuses ``Add`` + ``LayerNormalization`` back into ``SkipLayerNormalization`` when it
loads a graph at the ``ORT_ENABLE_EXTENDED`` level or above, so the session that runs the graph
must disable that optimiser (:data:`DISABLED_OPTIMIZERS`, used by
:class:`alize.safety.minilm.MiniLMClassifier`).

Needs the ``onnx`` package (a development dependency): this runs when the model is exported
(:func:`alize.safety.export.quantise`) or, on an already exported model,
``python -m alize.safety.onnx_unfuse PATH``; the runtime only loads the rewritten file.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: onnxruntime optimisers the English stage's session turns off (names as onnxruntime gives them)
DISABLED_OPTIMIZERS: tuple[str, ...] = ("SkipLayerNormFusion",)
FUSED_OP = "SkipLayerNormalization"


def unfuse_skip_layer_norm(model: Any) -> int:
    """Replace every ``SkipLayerNormalization`` node of ``model`` (an ``onnx.ModelProto``) in place
    with ``Add`` (bias, when the node has one), ``Add`` (skip) and ``LayerNormalization``.

    Returns how many nodes were replaced. Nodes whose optional outputs (mean, inverse standard
    deviation, the pre-norm sum) are used are refused: the plain ops do not give them.
    """
    from onnx import helper

    nodes = []
    replaced = 0
    for node in model.graph.node:
        if node.op_type != FUSED_OP:
            nodes.append(node)
            continue
        if any(name for name in node.output[1:]):
            raise ValueError(f"{node.name}: optional outputs of {FUSED_OP} are used; cannot unfuse")
        epsilon = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-12)
        x, skip, gamma = node.input[0], node.input[1], node.input[2]
        beta = node.input[3] if len(node.input) > 3 else ""
        bias = node.input[4] if len(node.input) > 4 else ""
        prefix = f"{node.name or FUSED_OP}_unfused{replaced}"
        current = x
        if bias:
            biased = prefix + "_biased"
            nodes.append(helper.make_node("Add", [current, bias], [biased], name=prefix + "_bias"))
            current = biased
        nodes.append(helper.make_node("Add", [current, skip], [prefix + "_sum"], name=prefix + "_add"))
        norm_inputs = [prefix + "_sum", gamma] + ([beta] if beta else [])
        nodes.append(
            helper.make_node(
                "LayerNormalization",
                norm_inputs,
                [node.output[0]],
                name=prefix + "_norm",
                axis=-1,
                epsilon=epsilon,
            )
        )
        replaced += 1
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return replaced


def unfuse_file(path: Path, out: Path | None = None) -> int:
    """Rewrite the graph at ``path`` (in place unless ``out`` is given); returns nodes replaced."""
    import onnx

    model = onnx.load(str(path))
    replaced = unfuse_skip_layer_norm(model)
    onnx.checker.check_model(model)
    onnx.save(model, str(out or path))
    return replaced


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("path", type=Path, help="an ONNX model file (rewritten in place)")
    parser.add_argument("--output", type=Path, default=None, help="write here instead")
    args = parser.parse_args(argv)
    replaced = unfuse_file(args.path, args.output)
    print(f"{args.output or args.path}: {replaced} {FUSED_OP} nodes replaced")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
