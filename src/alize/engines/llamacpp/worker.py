"""The llama.cpp worker process: loads one GGUF into ``xllamacpp.Server`` and serves it.

Why a process: ``Server()`` holds the GIL while loading, and a llama.cpp assertion aborts the
whole process. Here a crash costs one deployment's in-flight requests, not the gateway.

Transport: the Server's own C++ HTTP listener on 127.0.0.1 (a random port), locked with a
per-worker secret API key that only the parent knows (passed in the environment, never argv).
This keeps Python out of the token hot path entirely. The worker prints one JSON line on
stdout when ready, then lives until its stdin closes (parent gone) or it is signalled.

Run as ``python -m alize.engines.llamacpp.worker`` with ``ALIZE_WORKER_CONFIG`` (JSON) and
``ALIZE_WORKER_SECRET`` set.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from typing import Any

from alize.catalog.gguf import read_gguf_info


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
    params.cpuparams.n_threads = int(config["threads"])
    params.cpuparams_batch.n_threads = int(config["threads"])
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
    params.warmup = True
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
    try:
        # The catalog's reader (header and metadata only): the engine and the model's card see
        # the same FIM tokens, template and context.
        traits = read_gguf_info(config["model_path"]).traits.to_json()
        import xllamacpp

        server = xllamacpp.Server(build_params(config, secret))
    except Exception as exc:  # reported to the parent as a clean load failure
        print(json.dumps({"ready": False, "error": f"{type(exc).__name__}: {exc}"}), flush=True)
        return 1
    print(json.dumps({"ready": True, "address": server.listening_address, "traits": traits}), flush=True)
    # Block until the parent closes our stdin (or dies): the server runs on its own threads.
    sys.stdin.read()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
