"""``GET /catalog``: the model catalog as one server-rendered page.

No build step and no third-party script: the HTML is the template in ``templates/catalog.html``
filled with escaped values, and a small inline script (allowed by a per-response CSP nonce)
filters cards, posts the deploy form to the admin API, and pulls model packs (posting to
``/admin/api/packs/{name}/pull`` and polling the job; progress is written with ``textContent``).
Every value from a card goes through ``html.escape``; the page never shows local paths or
upstream URLs.
"""

from __future__ import annotations

import html
import json
import re
import secrets
from importlib.resources import files
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from alize.api.deps import ServicesDep
from alize.catalog.cards import ModelCard
from alize.catalog.tuning import tuning_text

router = APIRouter(tags=["catalog page"])

_E = html.escape
_SLOT = re.compile(r"\{\{([A-Z_]+)\}\}")


def _template() -> str:
    return files("alize.api").joinpath("templates/catalog.html").read_text(encoding="utf-8")


def _options(values: set[str]) -> str:
    return "".join(f'<option value="{_E(v)}">{_E(v)}</option>' for v in sorted(values))


def _price(micros: int, currency: str) -> str:
    return f"{micros / 1_000_000:.4f} {_E(currency)} / M tokens"


def code_sample(card: ModelCard, model: str, base: str) -> str:
    """curl and openai-Python snippets calling ``model`` (escaped for HTML by the caller)."""
    if "embeddings" in card.tasks:
        body = json.dumps({"model": model, "input": ["The quick brown fox", "A fast auburn fox"]})
        return (
            f"curl {base}/v1/embeddings \\\n  -H 'Authorization: Bearer $ALIZE_API_KEY' \\\n"
            f"  -H 'Content-Type: application/json' \\\n  -d '{body}'\n\n"
            "from openai import OpenAI\n"
            f'client = OpenAI(base_url="{base}/v1", api_key="YOUR_KEY")\n'
            f'vectors = client.embeddings.create(model="{model}", input=["The quick brown fox"])\n'
            "print(len(vectors.data[0].embedding))"
        )
    if "chat" in card.tasks:
        body = json.dumps(
            {"model": model, "messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 64}
        )
        return (
            f"curl {base}/v1/chat/completions \\\n  -H 'Authorization: Bearer $ALIZE_API_KEY' \\\n"
            f"  -H 'Content-Type: application/json' \\\n  -d '{body}'\n\n"
            "from openai import OpenAI\n"
            f'client = OpenAI(base_url="{base}/v1", api_key="YOUR_KEY")\n'
            f'reply = client.chat.completions.create(model="{model}",\n'
            '    messages=[{"role": "user", "content": "Hello!"}], max_tokens=64)\n'
            "print(reply.choices[0].message.content)"
        )
    body = json.dumps({"model": model, "prompt": "Once upon a time", "max_tokens": 64})
    return (
        f"curl {base}/v1/completions \\\n  -H 'Authorization: Bearer $ALIZE_API_KEY' \\\n"
        f"  -H 'Content-Type: application/json' \\\n  -d '{body}'\n\n"
        "from openai import OpenAI\n"
        f'client = OpenAI(base_url="{base}/v1", api_key="YOUR_KEY")\n'
        f'text = client.completions.create(model="{model}", prompt="Once upon a time", max_tokens=64)\n'
        "print(text.choices[0].text)"
    )


def _measured(card: ModelCard) -> str:
    """Only figures the benchmark took on this machine; nothing is shown rather than a guess."""
    m = card.measured
    if m is None:
        return "not measured yet (alize models bench)"
    decode = f"decode {m.decode_tokens_per_second:,.0f} tok/s, " if m.decode_tokens_per_second else ""
    return (
        f"{decode}prefill {m.prefill_tokens_per_second:,.0f} tok/s "
        f"({m.engine}, {m.machine}; {m.measured_at[:10]})"
    )


def _quality(card: ModelCard) -> str:
    """Scores ``alize eval`` measured, each with its size, date, machine and time taken."""
    if not card.evaluations:
        return "not evaluated yet (alize eval)"
    return "; ".join(
        f"{e.task} {e.metric} {e.score:.3g} on {e.items} items "
        f"({e.machine}; {e.measured_at[:10]}; {e.duration_s:,.0f} s)"
        for e in card.evaluations
    )


def cold_start_text(loads: dict[str, dict[str, Any] | None]) -> str:
    """The measured loads of the deployments serving a card, by deployment name."""
    parts = [
        f"{name}: p50 {c['p50_s']:.2f} s, max {c['max_s']:.2f} s over {c['loads']} load(s)"
        for name, c in sorted(loads.items())
        if c is not None
    ]
    return "; ".join(parts) or "not loaded on this server yet"


def render_card(
    card: ModelCard,
    deployed_as: list[str],
    base: str,
    cold_starts: dict[str, dict[str, Any] | None] | None = None,
) -> str:
    target = deployed_as[0] if deployed_as else card.id
    facts = [
        ("Publisher", card.publisher),
        ("Licence", card.license),
        ("Engine", card.engine),
        ("Context", f"{card.context_length:,} tokens"),
        ("Parameters", f"{card.parameter_count:,}" if card.parameter_count else "—"),
        ("Quantization", card.quantization or "—"),
        ("Size", f"{card.size_bytes / 1e6:,.1f} MB" if card.size_bytes else "—"),
        ("Input price", _price(card.price_input_per_million, card.currency)),
        ("Output price", _price(card.price_output_per_million, card.currency)),
        ("Deployed as", ", ".join(deployed_as) or "not deployed"),
    ]
    if card.embedding_dimensions:
        facts.insert(4, ("Dimensions", str(card.embedding_dimensions)))
    facts.insert(-1, ("Measured speed", _measured(card)))
    facts.insert(-1, ("Cold start", cold_start_text(cold_starts or {})))
    if card.tuning is not None:
        facts.insert(-1, ("Tuned for this machine", tuning_text(card.tuning)))
    facts.insert(-1, ("Measured quality", _quality(card)))
    # transparency (EU AI Act): what it is for, where it fails, where the weights come from
    facts += [
        ("Intended use", card.intended_use or "—"),
        ("Limitations", card.limitations or "—"),
        ("Weights from", card.weights_origin or "—"),
    ]
    rows = "".join(f"<dt>{_E(k)}</dt><dd>{_E(v)}</dd>" for k, v in facts)
    tags = "".join(f"<span>{_E(t)}</span>" for t in (*card.tasks, *card.languages))
    sample = code_sample(card, target, base)
    note = "" if deployed_as else "<p class='id'>Deploy it first; the sample uses the suggested name.</p>"
    return (
        f'<article data-id="{_E(card.id)}" data-task="{_E(" ".join(card.tasks))}" '
        f'data-license="{_E(card.license)}" data-language="{_E(" ".join(card.languages))}">'
        f"<h2>{_E(card.display_name)}</h2><div class='id'>{_E(card.id)}</div>"
        f"<div class='tags'>{tags}</div><p>{_E(card.description)}</p><dl>{rows}</dl>"
        f"<details><summary>Code sample</summary>{note}<pre><code>{_E(sample)}</code></pre></details>"
        f'<form class="deploy" data-model="{_E(card.id)}">'
        f'<label>Name <input name="name" required value="{_E(card.id)}"></label>'
        '<label>Replicas <input name="replicas" type="number" min="1" max="16" value="1"></label>'
        '<label>Idle timeout (s) <input name="idle" type="number" min="0" value="0"></label>'
        '<button type="submit">Deploy</button><span class="status" role="status"></span></form>'
        "</article>"
    )


def render_pack(pack: dict[str, Any]) -> str:
    """One model pack with its Pull button (the script posts to the admin API and polls)."""
    status = str(pack["status"])
    job = pack.get("job") or {}
    if job.get("state") not in (None, "done"):
        status = str(job["state"])
    button = (
        f'<button type="submit">Pull ({pack["download_bytes"] / 1e6:,.0f} MB)</button>'
        if pack["status"] == "available"
        else ""
    )
    return (
        f'<form class="pull" data-pack="{_E(pack["name"])}"><strong>{_E(pack["display_name"])}</strong> '
        f'<span class="id">{_E(pack["name"])} · {_E(pack["license"])} · '
        f"{_E(', '.join(pack['languages']))} · {pack['size_bytes'] / 1e6:,.0f} MB</span> "
        f'{button}<span class="status" role="status">{_E(status)}</span></form>'
    )


@router.get("/catalog", response_class=HTMLResponse, summary="The model catalog (web page)")
async def catalog_page(request: Request, services: ServicesDep) -> HTMLResponse:
    cards = await services.catalog.list()
    deployed: dict[str, list[str]] = {}
    cold: dict[str, dict[str, dict[str, Any] | None]] = {}
    for deployment in services.deployments.list():
        deployed.setdefault(deployment.spec.model_id, []).append(deployment.name)
        cold.setdefault(deployment.spec.model_id, {})[deployment.name] = deployment.cold_starts.summary()
    base = str(request.base_url).rstrip("/")
    nonce = secrets.token_urlsafe(16)
    values = {
        "NONCE": nonce,
        "COUNT": str(len(cards)),
        "BASE": _E(base),
        "TASK_OPTIONS": _options({t for c in cards for t in c.tasks}),
        "LICENSE_OPTIONS": _options({c.license for c in cards}),
        "LANGUAGE_OPTIONS": _options({lang for c in cards for lang in c.languages}),
        "CARDS": "\n".join(render_card(c, deployed.get(c.id, []), base, cold.get(c.id)) for c in cards),
        "PACKS": "\n".join(render_pack(p) for p in await services.packs.list()),
    }
    # one pass, so a value that happens to contain "{{CARDS}}" is never substituted again
    page = _SLOT.sub(lambda m: values[m.group(1)], _template())
    csp = (
        f"default-src 'self'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
        "img-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    )
    return HTMLResponse(
        page,
        headers={
            "Content-Security-Policy": csp,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
        },
    )
