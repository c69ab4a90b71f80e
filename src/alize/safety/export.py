"""Train the shipped MiniLM on everything, export it to int8 ONNX, write its metadata (training only).

``python -m alize.safety.finetune final`` trains on the whole training corpus and keeps the
weights after each evaluated epoch; ``python -m alize.safety.finetune export`` (after ``cv`` and
``python -m alize.safety.finetune_select``) then, for the chosen epoch:

1. loads those weights;
2. exports the float32 model to ONNX (TorchScript exporter, opset 17, dynamic batch and length);
3. fuses attention, layer norms and GELUs with onnxruntime's transformer optimizer;
4. quantises the weights of every matrix product to int8 (``quantize_dynamic``, per channel,
   ``reduce_range=True``: 7-bit weights, so the u8 x s8 kernels of CPUs without VNNI cannot
   saturate and every x86 CPU computes the same thing), then splits the fused residual layer
   norms back into ``Add`` + ``LayerNormalization`` (:mod:`alize.safety.onnx_unfuse`: onnxruntime's
   fused CPU kernel is 8x slower);
5. writes ``data/minilm/`` (``model.onnx``, ``tokenizer.json``, ``meta.json``) and the float32
   PyTorch probabilities of every dev-set row (head and tail windows, maximum per head) to
   ``tests/safety/data/minilm_reference.npz``, which the tests compare the int8 model with.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from alize.safety.categories import HEADS
from alize.safety.dataset import load_dev
from alize.safety.encoder import default_model_dir as minilm_package_dir
from alize.safety.finetune import MAX_TOKENS, Config, Corpus, Net, fit, predict
from alize.safety.minilm import MiniLMClassifier, WindowTokenizer
from alize.safety.minilm import default_model_dir as shipped_dir
from alize.safety.onnx_unfuse import unfuse_file

REFERENCE = Path(__file__).resolve().parents[3] / "tests" / "safety" / "data" / "minilm_reference.npz"
NUM_HEADS = 12
HIDDEN = 384


def to_onnx(model: Net, path: Path) -> None:
    model.eval()
    ids = torch.ones((2, 16), dtype=torch.int64)
    mask = torch.ones((2, 16), dtype=torch.int64)
    torch.onnx.export(
        model,
        (ids, mask),
        str(path),
        input_names=["input_ids", "attention_mask"],
        output_names=["logits"],
        dynamic_axes={
            "input_ids": {0: "batch", 1: "tokens"},
            "attention_mask": {0: "batch", 1: "tokens"},
            "logits": {0: "batch"},
        },
        opset_version=17,
        dynamo=False,
    )


#: nodes of the fused graph left in float32 (a node is kept when its name contains one of these)
FLOAT_NODES: tuple[str, ...] = ()


def optimise_and_quantise(fp32: Path, out: Path) -> None:
    from onnxruntime.transformers import optimizer

    fused = fp32.with_name("model-fused.onnx")
    optimised = optimizer.optimize_model(
        str(fp32), model_type="bert", num_heads=NUM_HEADS, hidden_size=HIDDEN, opt_level=1
    )
    optimised.save_model_to_file(str(fused))
    quantise(fused, out)


def quantise(fused: Path, out: Path, float_nodes: tuple[str, ...] = FLOAT_NODES) -> None:
    """Dynamic int8 quantisation of the fused graph, but for the nodes named by ``float_nodes``."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    names = [node.name for node in onnx.load(str(fused)).graph.node]
    quantize_dynamic(
        str(fused),
        str(out),
        weight_type=QuantType.QInt8,
        per_channel=True,
        reduce_range=True,
        nodes_to_exclude=[n for n in names if any(part in n for part in float_nodes)],
        # the fused Attention / SkipLayerNormalization ops are outside shape inference's domain
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )
    unfuse_file(out)  # onnxruntime's fused SkipLayerNormalization is 8x slower on CPU (onnx_unfuse.py)


def requantise(cache: Path, data: Path, log: Any) -> None:
    """Quantise the cached fused graph again (after a change to :data:`FLOAT_NODES`) and compare
    it with the reference scores the export wrote, without exporting the PyTorch model again."""
    target = shipped_dir()
    quantise(cache / "model-fused.onnx", target / "model.onnx")
    report_agreement(target, [r.text for r in load_dev(data)], log)


def report_agreement(target: Path, texts: list[str], log: Any) -> None:
    with np.load(REFERENCE, allow_pickle=False) as saved:
        reference = saved["probabilities"]
    int8 = MiniLMClassifier(target).raw_probabilities(texts)
    diff = np.abs(int8 - reference)
    size = (target / "model.onnx").stat().st_size / 1e6
    print(
        f"wrote {target} (model.onnx {size:.1f} MB); int8 vs float32 PyTorch on {len(texts)} dev rows: "
        f"max |diff| {diff.max():.4f}, p99 {np.percentile(diff, 99):.4f}, mean {diff.mean():.5f}, "
        f"scores off by more than 0.01: {int((diff > 0.01).sum())} of {diff.size}",
        file=log,
    )


def train_final(corpus: Corpus, cache: Path, config: Config, log: Any) -> None:
    """Train on every row with the schedule cross-validation used; save the weights after each
    epoch it evaluated (``final_e{N}.pt``), so the chosen one is exported without training again."""
    print(f"final model: {config.epochs} epochs on {len(corpus.texts)} rows", file=log, flush=True)
    started = time.perf_counter()

    def save(epoch: int, model: Net) -> None:
        torch.save(model.state_dict(), cache / f"final_e{epoch}.pt")
        (cache / f"final_e{epoch}.json").write_text(
            json.dumps({"rows": len(corpus.texts), "seconds": round(time.perf_counter() - started)}),
            encoding="utf-8",
        )

    fit(corpus, np.arange(len(corpus.texts), dtype=np.int64), config, log, save)


def export_final(cache: Path, data: Path, epochs: int | None, log: Any) -> None:
    """Export the final model of the chosen epoch (``selection.json``) with its thresholds."""
    selection = json.loads((cache / "selection.json").read_text(encoding="utf-8"))
    epochs = epochs or int(selection["epochs"])
    model = Net(minilm_package_dir(), len(HEADS), Config().dropout)
    model.load_state_dict(torch.load(cache / f"final_e{epochs}.pt"))
    model.eval()
    run = json.loads((cache / f"final_e{epochs}.json").read_text(encoding="utf-8"))
    write_shipped(model, selection, epochs, int(run["rows"]), int(run["seconds"]), cache, data, log)


def write_shipped(
    model: Net,
    selection: dict[str, Any],
    epochs: int,
    rows: int,
    seconds: int,
    cache: Path,
    data: Path,
    log: Any,
) -> None:
    """Export, fuse, quantise and write ``data/minilm/`` and the reference scores."""
    fp32 = cache / "model-fp32.onnx"
    to_onnx(model, fp32)
    target = shipped_dir()
    target.mkdir(parents=True, exist_ok=True)
    optimise_and_quantise(fp32, target / "model.onnx")
    shutil.copyfile(minilm_package_dir() / "tokenizer.json", target / "tokenizer.json")
    write_meta(target, selection, epochs, rows, seconds)
    dev = load_dev(data)
    texts = [r.text for r in dev]
    tokenizer = WindowTokenizer(target / "tokenizer.json", MAX_TOKENS)
    windows, owners = tokenizer.windows(texts)
    reference = predict(model, windows, np.array(owners, dtype=np.int64), len(texts))
    REFERENCE.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(REFERENCE, probabilities=reference, heads=np.array(HEADS))
    report_agreement(target, texts, log)


def write_meta(target: Path, selection: dict[str, Any], epochs: int, rows: int, seconds: int) -> None:
    """``meta.json``: heads, window, thresholds and gating, and the figures they were chosen with."""
    meta = {
        "heads": list(HEADS),
        "max_tokens": MAX_TOKENS,
        "thresholds": selection["thresholds"],
        "gated": selection["gated"],
        "epochs": epochs,
        "ngram_weight": float(selection.get("ngram_weight", 0.0)),
        "cv_flagged": selection["cv_flagged"],
        "presets": selection["presets"],
        "per_head_oof": selection["per_head_oof"],
        "trained_rows": rows,
        "training_seconds": seconds,
    }
    (target / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")


def export_meta(cache: Path) -> None:
    """Rewrite only ``meta.json`` from ``selection.json`` (the exported epoch must be the chosen one)."""
    selection = json.loads((cache / "selection.json").read_text(encoding="utf-8"))
    target = shipped_dir()
    shipped = json.loads((target / "meta.json").read_text(encoding="utf-8"))
    if int(shipped["epochs"]) != int(selection["epochs"]):
        raise SystemExit(
            f"the shipped model has {shipped['epochs']} epochs, the selection {selection['epochs']}"
        )
    write_meta(
        target,
        selection,
        int(shipped["epochs"]),
        int(shipped["trained_rows"]),
        int(shipped["training_seconds"]),
    )
