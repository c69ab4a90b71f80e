"""``alize chat``: a streaming terminal chat against a running Alizé server."""

from __future__ import annotations

import json

import httpx
import typer


def _stream_reply(client: httpx.Client, model: str, messages: list[dict[str, str]], max_tokens: int) -> str:
    body = {"model": model, "messages": messages, "stream": True, "max_tokens": max_tokens}
    reply = ""
    with client.stream("POST", "/v1/chat/completions", json=body) as response:
        if response.status_code != 200:
            response.read()
            try:
                message = response.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = response.text
            typer.secho(f"error {response.status_code}: {message}", fg=typer.colors.RED, err=True)
            return ""
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if "error" in chunk:
                typer.secho(f"\nerror: {chunk['error']['message']}", fg=typer.colors.RED, err=True)
                break
            for choice in chunk.get("choices", []):
                piece = (choice.get("delta") or {}).get("content") or ""
                reply += piece
                typer.echo(piece, nl=False)
    typer.echo()
    return reply


def chat(
    url: str = typer.Option("http://127.0.0.1:8000", help="Server URL."),
    model: str = typer.Option("smollm2-135m-instruct", help="Deployment to talk to."),
    system: str | None = typer.Option(None, help="System prompt."),
    api_key: str | None = typer.Option(
        None, envvar="ALIZE_API_KEY", help="API key, if the server requires one."
    ),
    max_tokens: int = typer.Option(512, help="Most tokens per reply."),
) -> None:
    """Chat in the terminal; replies stream as they are generated. Ctrl-D or /exit quits."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    messages: list[dict[str, str]] = [{"role": "system", "content": system}] if system else []
    with httpx.Client(base_url=url, headers=headers, timeout=httpx.Timeout(300.0, connect=5.0)) as client:
        while True:
            try:
                text = input("you> ").strip()
            except (EOFError, KeyboardInterrupt):
                typer.echo()
                return
            if text in ("/exit", "/quit"):
                return
            if not text:
                continue
            messages.append({"role": "user", "content": text})
            typer.echo("assistant> ", nl=False)
            try:
                reply = _stream_reply(client, model, messages, max_tokens)
            except httpx.HTTPError as exc:
                typer.secho(f"cannot reach {url}: {exc}", fg=typer.colors.RED, err=True)
                messages.pop()
                continue
            messages.append({"role": "assistant", "content": reply})
