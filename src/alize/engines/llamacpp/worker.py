"""The llama.cpp worker process: loads one GGUF into ``xllamacpp.Server`` and serves it.

Why a process: ``Server()`` holds the GIL while loading, and a llama.cpp assertion aborts the
whole process. Here a crash costs one deployment's in-flight requests, not the gateway.

Transport: the Server's own C++ HTTP listener on 127.0.0.1 (a random port), locked with a
per-worker secret API key that only the parent knows (passed in the environment, never argv).
This keeps Python out of the token hot path entirely. The worker prints one JSON line on
stdout when ready (with how long each start-up step took), then lives until its stdin closes
(parent gone) or it is signalled.

Start-up is on the cold-start path of every scale-from-zero request, so it does only what the
model needs (measured on SmolLM2-135M, 2 busy cores, bench/coldstart.py): the catalog's
header-only reader for the traits (~0.08 s), no llama.cpp "fit" pass (``fit_params``: a dry-run
load that sizes GPU layers and context to free device memory; on a CPU-only build it found
nothing to fit and cost 0.3-3 s of CPU), and a KV cache of exactly ``parallel × ctx_per_slot``
cells, whose zeroing is most of what remains (1.5 GB for 16 × 4096 SmolLM2 tokens in f16).

Run as ``python -m alize.engines.llamacpp.worker`` with ``ALIZE_WORKER_CONFIG`` (JSON) and
``ALIZE_WORKER_SECRET`` set.
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()

import json  # noqa: E402  (after the clock: the imports are part of the measured start-up)
import os  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
from typing import Any  # noqa: E402

from alize.catalog.gguf import read_gguf_info  # noqa: E402

#: KV cache element types a deployment may ask for (llama.cpp's ``--cache-type-k/-v`` names)
KV_CACHE_TYPES = ("f16", "bf16", "q8_0", "q4_0")
#: flash attention: llama.cpp's own choice, forced on, or off
FLASH_ATTN = ("auto", "on", "off")


def build_params(config: dict[str, Any], secret: str) -> Any:
    """Map Alizé's engine settings onto xllamacpp's CommonParams."""
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = config["model_path"]
    parallel = int(config["parallel"])
    params.n_parallel = parallel
    # parallel * ctx_per_slot KV cells: every slot is guaranteed ctx_per_slot tokens. Without a
    # unified pool each slot owns its cells, which keeps seeded sampling reproducible under load.
    params.n_ctx = parallel * int(config["ctx_per_slot"])
    params.kv_unified = bool(config.get("kv_unified", False))
    params.n_batch = int(config["batch_size"])
    if config.get("ubatch_size"):
        params.n_ubatch = min(int(config["ubatch_size"]), params.n_batch)
    params.cpuparams.n_threads = int(config["threads"])
    params.cpuparams_batch.n_threads = int(config["threads"])
    kv_type = str(config.get("kv_cache_type") or "f16")
    if kv_type != "f16":
        ggml_type = getattr(xllamacpp.ggml_type, f"GGML_TYPE_{kv_type.upper()}")
        params.cache_type_k = ggml_type
        params.cache_type_v = ggml_type
    flash = str(config.get("flash_attn") or "auto")
    params.flash_attn_type = {
        "auto": xllamacpp.llama_flash_attn_type.LLAMA_FLASH_ATTN_TYPE_AUTO,
        "on": xllamacpp.llama_flash_attn_type.LLAMA_FLASH_ATTN_TYPE_ENABLED,
        "off": xllamacpp.llama_flash_attn_type.LLAMA_FLASH_ATTN_TYPE_DISABLED,
    }[flash]
    # No dry-run "fit" pass: it sizes offloaded layers and the context to free *device* memory;
    # Alizé sizes the context itself (parallel x ctx_per_slot) and its memory budget decides.
    params.fit_params = bool(config.get("fit_params", False))
    # One HTTP thread per streaming slot plus headroom for tokenize/props calls.
    params.n_threads_http = parallel + 8
    params.cache_ram_mib = int(config["cache_ram_mib"])
    params.cont_batching = True
    params.cache_prompt = True
    params.use_jinja = True
    params.endpoint_metrics = True
    params.endpoint_slots = False
    params.ui = False
    params.api_keys = [secret]
    params.hostnames = ["127.0.0.1"]
    params.port = 0
    params.warmup = bool(config.get("warmup", True))
    params.verbosity = int(config.get("verbosity", 0))
    adapters = [str(p) for p in config.get("lora_adapters") or ()]
    if adapters:
        # Loaded at scale 0; every request sets the scales it wants (see engine._lora_scales).
        params.lora_adapters = [xllamacpp.CommonAdapterLoraInfo(path, 0.0) for path in adapters]
        params.lora_init_without_apply = True
        # The RAM prompt cache restores a prefix into a slot without recording which adapters
        # computed it: measured on this build, a base request after an adapter request on the same
        # prompt got the adapter's KV back and answered neither as the base nor as the adapter.
        # Per-slot caches are cleared by llama.cpp when a slot's adapter set changes, so they stay.
        params.cache_ram_mib = 0
    return params


def main() -> int:
    config = json.loads(os.environ["ALIZE_WORKER_CONFIG"])
    secret = os.environ.pop("ALIZE_WORKER_SECRET")
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    imported = time.perf_counter()
    try:
        # The catalog's reader (header and metadata only): the engine and the model's card see
        # the same FIM tokens, template and context.
        traits = read_gguf_info(config["model_path"]).traits.to_json()
        read = time.perf_counter()
        import xllamacpp

        params = build_params(config, secret)
        built = time.perf_counter()
        server = xllamacpp.Server(params)
    except Exception as exc:  # reported to the parent as a clean load failure
        print(json.dumps({"ready": False, "error": f"{type(exc).__name__}: {exc}"}), flush=True)
        return 1
    done = time.perf_counter()
    timings = {
        "imports_s": round(imported - STARTED, 4),
        "traits_s": round(read - imported, 4),
        "engine_import_s": round(built - read, 4),
        "server_s": round(done - built, 4),
    }
    message = {"ready": True, "address": server.listening_address, "traits": traits, "timings": timings}
    print(json.dumps(message), flush=True)
    # Block until the parent closes our stdin (or dies): the server runs on its own threads.
    sys.stdin.read()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
