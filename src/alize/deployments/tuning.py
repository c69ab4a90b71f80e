"""``alize models tune``: find the engine settings and weight format this machine runs fastest.

A coordinate search, each step on top of the best found before it, every candidate measured on a
real llama.cpp worker (:mod:`alize.deployments.tuning_probe`):

1. the baseline: the server's default settings and the model's own file, with the reference
   perplexity of the shipped text;
2. ``threads`` (1, half and all of the usable CPUs), by single-stream decode speed;
3. flash attention on and off, by decode speed;
4. ``batch_size`` (the logical batch; the physical one stays at most 512), by prefill speed;
5. the KV cache type (q8_0 beside f16; quantised V needs flash attention on): kept when its
   perplexity is within :data:`~alize.catalog.tuning.PERPLEXITY_TOLERANCE` of f16's and decode
   is no slower (it also halves the KV memory, hence the cold start's page clearing);
6. weight variants requantised from the file (:mod:`alize.catalog.variants`): kept only when
   the perplexity holds, chosen only when faster than the weights chosen so far;
7. slots: 1, 2, 4 and 8 concurrent streams on the tuned settings; the recommended ``parallel``
   is the fewest streams reaching 95 % of the best aggregate throughput;
8. the start of an engine with the tuned settings (what a scaled-to-zero request waits for),
   and single-stream decode beside the memory-bandwidth bound (:mod:`alize.deployments.bandwidth`).

A "faster" candidate must beat the current one by :data:`MIN_GAIN` (2 %), so run-to-run noise
does not flip a setting. Nothing is written to the catalog here: the caller records the result.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

from alize.catalog.gguf import read_gguf_info
from alize.catalog.tuning import PERPLEXITY_TOLERANCE, Bandwidth, Trial, TunedSettings, Tuning, Variant
from alize.catalog.variants import candidate_formats, variant_path, write_variant
from alize.deployments.bandwidth import bound_tokens_per_second, bytes_per_token, memory_bandwidth_gb_s
from alize.deployments.benchmark import cpu_flags, describe_machine
from alize.deployments.tuning_probe import PERPLEXITY_TEXT_NAME, Probe, Speed, perplexity_text, running
from alize.engines.base import EngineConfig
from alize.engines.llamacpp.process import worker_config
from alize.errors import AlizeError

#: a candidate must be this much faster to replace the current choice
MIN_GAIN = 0.02
SLOT_STREAMS = (1, 2, 4, 8)

#: progress: (what is being measured, steps done, steps in all)
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True, slots=True)
class TunePlan:
    runs: int = 3
    prompt_tokens: int = 256
    decode_tokens: int = 64
    perplexity_tokens: int = 256
    variants: bool = True
    slots: bool = True
    #: the values tried per setting (None: 1, half and all of the usable CPUs)
    threads: tuple[int, ...] | None = None
    flash_attn: tuple[str, ...] = ("on", "off")
    batch_sizes: tuple[int, ...] = (256, 512, 2048)
    kv_cache_types: tuple[str, ...] = ("q8_0",)
    #: weight formats tried (None: :func:`alize.catalog.variants.candidate_formats`)
    formats: tuple[str, ...] | None = None
    #: the server's engine defaults the baseline starts from
    defaults: EngineConfig = field(default_factory=lambda: EngineConfig(kind="llamacpp"))
    #: slots and context of the engine whose start is timed (the deployment's quick start)
    start_parallel: int = 2
    start_ctx_per_slot: int = 4096


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def thread_candidates(cores: int) -> list[int]:
    return sorted({1, max(1, cores // 2), cores})


class Tuner:
    def __init__(
        self,
        model_id: str,
        model_path: Path,
        plan: TunePlan,
        *,
        variants_dir: Path,
        engine_features: str,
        progress: Progress | None = None,
    ) -> None:
        self._model_id = model_id
        self._path = model_path
        self._plan = plan
        self._variants_dir = variants_dir
        self._features = engine_features
        self._progress = progress or (lambda _what, _done, _total: None)
        self._cores = _cores()
        self._done = 0
        self.trials: list[Trial] = []
        self.perplexity_tokens = 1
        self._bandwidth_gb_s = 0.0
        self._threads = list(plan.threads or thread_candidates(self._cores))
        info = read_gguf_info(model_path)
        own = info.quantization
        # what the measurements fit in: llama.cpp caps a slot at the model's trained context
        self._ctx = min(1024, info.context_length or 1024)
        self._prompt_tokens = max(8, min(plan.prompt_tokens, self._ctx - plan.decode_tokens - 8))
        self._perplexity_tokens = max(2, min(plan.perplexity_tokens, self._ctx - 2))
        formats = (
            plan.formats if plan.formats is not None else candidate_formats(cpu_flags(), engine_features, own)
        )
        self._formats = [f for f in formats if f != own] if plan.variants else []

    @property
    def total_steps(self) -> int:
        plan = self._plan
        tried = len(self._threads) + len(plan.flash_attn) + len(plan.batch_sizes) + len(plan.kv_cache_types)
        return 1 + tried + 2 * len(self._formats) + (1 if plan.slots else 0) + 2

    def _step(self, what: str) -> None:
        self._progress(what, self._done, self.total_steps)
        self._done += 1

    def _config(
        self, settings: TunedSettings, path: Path, *, parallel: int = 1, ctx: int | None = None
    ) -> EngineConfig:
        return replace(
            self._plan.defaults,
            model_path=path,
            parallel=parallel,
            ctx_per_slot=ctx or self._ctx,
            threads=settings.threads,
            batch_size=settings.batch_size,
            ubatch_size=settings.ubatch_size,
            flash_attn=settings.flash_attn,
            kv_cache_type=settings.kv_cache_type,
            cache_ram_mib=0,
            adapters=(),
        )

    async def _measure(
        self, settings: TunedSettings, path: Path, *, perplexity: bool = False
    ) -> tuple[Speed, float | None]:
        plan = self._plan
        async with running(worker_config(self._config(settings, path))) as probe:
            speed = await probe.speed(
                prompt_tokens=self._prompt_tokens, decode_tokens=plan.decode_tokens, runs=plan.runs
            )
            ppl = await self._perplexity(probe) if perplexity else None
        return speed, ppl

    async def _perplexity(self, probe: Probe) -> float:
        value, self.perplexity_tokens = await probe.perplexity(
            perplexity_text(), max_tokens=self._perplexity_tokens
        )
        return round(value, 4)

    def _trial(self, setting: str, value: object, speed: Speed, kept: bool, **extra: object) -> None:
        self.trials.append(
            Trial(
                setting=setting,
                value=str(value),
                decode_tokens_per_second=speed.decode_tokens_per_second,
                prefill_tokens_per_second=speed.prefill_tokens_per_second,
                kept=kept,
                **extra,
            )
        )

    async def _choose(
        self, setting: str, best: TunedSettings, speed: Speed, values: list[object], by_prefill: bool = False
    ) -> tuple[TunedSettings, Speed]:
        """Try ``values`` of ``setting`` on top of ``best`` (whose own speed is ``speed``)."""
        results: list[tuple[TunedSettings, Speed]] = [(best, speed)]
        for value in values:
            if value == getattr(best, setting):
                continue
            self._step(f"{setting}={value}")
            candidate = replace_settings(best, **{setting: value})
            try:
                results.append((candidate, (await self._measure(candidate, self._path))[0]))
            except AlizeError as exc:
                self._trial(setting, value, Speed(0.0, 0.0), False, note=_failed(exc))

        def score(item: tuple[TunedSettings, Speed]) -> float:
            s = item[1]
            return s.prefill_tokens_per_second if by_prefill else s.decode_tokens_per_second

        if len(results) == 1:  # nothing else was tried (or everything else failed to start)
            return best, speed
        chosen = results[0]
        for item in results[1:]:
            if score(item) > score(chosen) * (1 + MIN_GAIN):
                chosen = item
        for candidate, s in results:
            self._trial(setting, getattr(candidate, setting), s, candidate is chosen[0])
        return chosen

    async def run(self) -> Tuning:
        started = time.perf_counter()
        plan, cores = self._plan, self._cores
        best = TunedSettings(
            threads=min(plan.defaults.threads, cores),
            batch_size=plan.defaults.batch_size,
            flash_attn="auto",
            kv_cache_type="f16",
        )
        self._step("baseline")
        speed, reference = await self._measure(best, self._path, perplexity=True)
        assert reference is not None
        baseline = speed
        self._trial("baseline", "defaults", speed, True, perplexity=reference)
        best, speed = await self._choose("threads", best, speed, list(self._threads))
        best, speed = await self._choose("flash_attn", best, speed, list(plan.flash_attn))
        best, speed = await self._choose("batch_size", best, speed, list(plan.batch_sizes), by_prefill=True)
        for kv_type in plan.kv_cache_types:
            best, speed = await self._kv(kv_type, best, speed, reference)
        path, variants, speed = await self._variants(best, speed, reference)
        recommended = await self._slots(best, path) if plan.slots else None
        best = replace_settings(best, recommended_parallel=recommended)
        self._step("engine start")
        config = self._config(best, path, parallel=plan.start_parallel, ctx=plan.start_ctx_per_slot)
        async with running(worker_config(config)) as probe:
            cold_start = round(probe.load_s, 3)
        self._step("memory bandwidth")
        bandwidth = self._bandwidth(best, path, speed)
        self._progress("done", self.total_steps, self.total_steps)
        chosen = next((v for v in variants if v.path is not None and v.path == str(path)), None)
        return Tuning(
            settings=best,
            variant_format=chosen.format if chosen is not None else None,
            variant_path=chosen.path if chosen is not None else None,
            baseline_decode_tokens_per_second=baseline.decode_tokens_per_second,
            decode_tokens_per_second=speed.decode_tokens_per_second,
            prefill_tokens_per_second=speed.prefill_tokens_per_second,
            cold_start_s=cold_start,
            trials=tuple(self.trials),
            variants=tuple(variants),
            bandwidth=bandwidth,
            perplexity_text=PERPLEXITY_TEXT_NAME,
            perplexity_tokens=self.perplexity_tokens,
            machine=describe_machine(),
            cpu_flags=tuple(cpu_flags()),
            measured_at=datetime.now(UTC).isoformat(timespec="seconds"),
            duration_s=round(time.perf_counter() - started, 1),
        )

    async def _kv(
        self, kv_type: str, best: TunedSettings, speed: Speed, reference: float
    ) -> tuple[TunedSettings, Speed]:
        self._step(f"kv_cache_type={kv_type}")
        candidate = replace_settings(best, kv_cache_type=kv_type, flash_attn="on")
        try:
            kv_speed, ppl = await self._measure(candidate, self._path, perplexity=True)
        except AlizeError as exc:  # e.g. heads too small for the cache type's blocks
            self._trial("kv_cache_type", kv_type, Speed(0.0, 0.0), False, note=_failed(exc))
            return best, speed
        assert ppl is not None
        holds = ppl <= reference * (1 + PERPLEXITY_TOLERANCE)
        keep = holds and kv_speed.decode_tokens_per_second >= speed.decode_tokens_per_second * (1 - MIN_GAIN)
        note = f"perplexity {ppl:.3f} vs {reference:.3f} with f16" + (
            "" if holds else ": quality does not hold"
        )
        self._trial("kv_cache_type", kv_type, kv_speed, keep, perplexity=ppl, note=note)
        return (candidate, kv_speed) if keep else (best, speed)

    async def _variants(
        self, best: TunedSettings, speed: Speed, reference: float
    ) -> tuple[Path, list[Variant], Speed]:
        per_token = bytes_per_token(self._path)
        self._bandwidth_gb_s = memory_bandwidth_gb_s(threads=best.threads)
        original = read_gguf_info(self._path)
        variants = [
            Variant(
                format=original.quantization or "original",
                original=True,
                size_bytes=original.size_bytes,
                decode_tokens_per_second=speed.decode_tokens_per_second,
                prefill_tokens_per_second=speed.prefill_tokens_per_second,
                perplexity=reference,
                perplexity_change=0.0,
                bytes_per_token=per_token,
                bandwidth_bound_tokens_per_second=bound_tokens_per_second(self._bandwidth_gb_s, per_token),
                kept=True,
                note="the packaged weights",
            )
        ]
        path = self._path
        for fmt in self._formats:
            self._step(f"write {fmt}")
            target = variant_path(self._variants_dir, self._model_id, self._path, fmt)
            written = write_variant(self._path, target, fmt)
            self._step(f"measure {fmt}")
            try:
                v_speed, ppl = await self._measure(best, written.path, perplexity=True)
            except AlizeError as exc:
                written.path.unlink(missing_ok=True)
                self._trial("variant", fmt, Speed(0.0, 0.0), False, note=_failed(exc))
                continue
            assert ppl is not None
            change = ppl / reference - 1
            holds = change <= PERPLEXITY_TOLERANCE
            faster = v_speed.decode_tokens_per_second > speed.decode_tokens_per_second * (1 + MIN_GAIN)
            note = (
                "quality holds"
                if holds
                else f"perplexity {change:+.1%}: over the {PERPLEXITY_TOLERANCE:.0%} bound"
            )
            if holds and faster:
                path, speed, note = written.path, v_speed, "chosen: fastest so far"
            elif holds:
                note = "quality holds, not faster"
            v_bytes = bytes_per_token(written.path)
            if not holds:
                written.path.unlink(missing_ok=True)
            variants.append(
                Variant(
                    format=fmt,
                    original=False,
                    path=str(written.path) if holds else None,
                    size_bytes=written.size_bytes,
                    decode_tokens_per_second=v_speed.decode_tokens_per_second,
                    prefill_tokens_per_second=v_speed.prefill_tokens_per_second,
                    perplexity=ppl,
                    perplexity_change=round(change, 5),
                    bytes_per_token=v_bytes,
                    bandwidth_bound_tokens_per_second=bound_tokens_per_second(self._bandwidth_gb_s, v_bytes),
                    kept=holds,
                    note=note,
                )
            )
        for i, v in enumerate(variants):  # name the one chosen in the end
            if v.path is not None and v.path == str(path):
                variants[i] = v.model_copy(update={"note": "chosen: the fastest whose quality holds"})
            elif v.note.startswith("chosen"):
                variants[i] = v.model_copy(update={"note": "quality holds, a later variant was faster"})
        return path, variants, speed

    async def _slots(self, best: TunedSettings, path: Path) -> int:
        self._step("slots")
        top = max(SLOT_STREAMS)
        config = self._config(best, path, parallel=top)
        throughput: dict[int, float] = {}
        async with running(worker_config(config)) as probe:
            for streams in SLOT_STREAMS:
                throughput[streams] = await probe.throughput(
                    streams=streams, decode_tokens=self._plan.decode_tokens
                )
        peak = max(throughput.values())
        recommended = min(s for s, t in throughput.items() if t >= 0.95 * peak)
        for streams, value in throughput.items():
            self.trials.append(
                Trial(
                    setting="parallel",
                    value=str(streams),
                    decode_tokens_per_second=round(value / streams, 1),
                    prefill_tokens_per_second=0.0,
                    throughput_tokens_per_second=value,
                    kept=streams == recommended,
                    note=f"{streams} concurrent streams",
                )
            )
        return recommended

    def _bandwidth(self, best: TunedSettings, path: Path, speed: Speed) -> Bandwidth:
        bandwidth = max(self._bandwidth_gb_s, memory_bandwidth_gb_s(threads=best.threads))
        per_token = bytes_per_token(path)
        bound = bound_tokens_per_second(bandwidth, per_token)
        return Bandwidth(
            memory_bandwidth_gb_s=bandwidth,
            bytes_per_token=per_token,
            bound_tokens_per_second=bound,
            decode_tokens_per_second=speed.decode_tokens_per_second,
            fraction_of_bound=round(speed.decode_tokens_per_second / bound, 3) if bound else 0.0,
        )


def _failed(exc: AlizeError) -> str:
    return f"failed: {exc.message}"[:300]


def replace_settings(settings: TunedSettings, **changes: object) -> TunedSettings:
    return settings.model_copy(update=changes)
