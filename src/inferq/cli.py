"""The `inferq` command: typer parses arguments and calls the services, nothing more."""

from __future__ import annotations

import asyncio
import sys
from enum import StrEnum
from typing import Annotated, cast

import orjson
import typer
from rich.console import Console
from rich.table import Column, Table

from inferq.config import Settings, get_settings

app = typer.Typer(help="inferq: asynchronous LLM inference service.", no_args_is_help=True)
keys_app = typer.Typer(help="Manage API keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
console = Console()


class Pool(StrEnum):
    io = "io"
    local = "local"


def _settings(console: bool | None = None) -> Settings:
    from inferq.observability.logs import configure_logging

    settings = get_settings()
    configure_logging(settings, console)
    return settings


@app.command()
def serve() -> None:
    """Run API, workers and (if INFERQ_REDIS_URL is unset) an embedded Redis."""
    from inferq.serve import serve as run_serve

    def say(line: str) -> None:
        console.print(line, highlight=False, soft_wrap=True)

    # The supervisor's own lines are for the person at the terminal.
    raise typer.Exit(run_serve(_settings(console=True), say=say))


@app.command()
def api(
    host: Annotated[str | None, typer.Option(help="Bind address (INFERQ_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (INFERQ_PORT).")] = None,
) -> None:
    """Run the HTTP API (production process)."""
    import uvicorn

    settings = _settings()
    uvicorn.run(
        "inferq.app:create_app",
        factory=True,
        host=host or settings.host,
        port=port or settings.port,
        log_level=settings.log_level.lower(),
        # Logging is configured already: uvicorn's lines go through it too.
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=5,
    )


@app.command()
def worker(
    pool: Annotated[
        Pool, typer.Option(help="io: remote providers; local: in-process models.")
    ] = Pool.io,
    concurrency: Annotated[int | None, typer.Option(help="Jobs in flight in this process.")] = None,
) -> None:
    """Run a worker (production process); any number may share one broker."""
    from inferq.worker_process import run_worker

    raise typer.Exit(run_worker(_settings(), pool.value, concurrency))


@app.command()
def migrate() -> None:
    """Bring the database schema up to date."""
    from inferq.db.migrate import upgrade

    settings = _settings()
    upgrade(settings.resolved_database_url)
    console.print("database is up to date")


def _key_store_call(method: str, *args: object) -> object:
    from inferq.db.engine import create_async
    from inferq.db.migrate import upgrade
    from inferq.keys import KeyStore

    settings = _settings()
    upgrade(settings.resolved_database_url)

    async def call() -> object:
        engine = create_async(settings.resolved_database_url)
        try:
            return await getattr(KeyStore(engine), method)(*args)
        finally:
            await engine.dispose()

    return asyncio.run(call())


# Limits are stored as 32-bit integers; a larger one is refused here, not by the database.
_MAX_LIMIT = 2**31 - 1
RpmOption = Annotated[
    int | None, typer.Option("--rpm", min=1, max=_MAX_LIMIT, help="Requests per minute.")
]
TpmOption = Annotated[
    int | None, typer.Option("--tpm", min=1, max=_MAX_LIMIT, help="Tokens per minute.")
]
JobsOption = Annotated[
    int | None,
    typer.Option("--max-jobs", min=1, max=_MAX_LIMIT, help="Queued + running jobs at once."),
]


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option(help="A label for the key.")] = "default",
    admin: Annotated[bool, typer.Option("--admin", help="May read service-wide state.")] = False,
    rpm: RpmOption = None,
    tpm: TpmOption = None,
    max_jobs: JobsOption = None,
) -> None:
    """Create a key; it is printed once, alone on the last line."""
    from inferq.keys import KeyRecord, Limits

    created = _key_store_call("create", name, None, admin, Limits(rpm, tpm, max_jobs))
    record, plain = cast(tuple[KeyRecord, str], created)
    console.print(f"created key {record.id} ({record.prefix}…), name {name!r}. Store it now:")
    print(plain)


@keys_app.command("limits")
def keys_limits(
    key: Annotated[str, typer.Argument(help="Key id or prefix.")],
    rpm: RpmOption = None,
    tpm: TpmOption = None,
    max_jobs: JobsOption = None,
) -> None:
    """Set a key's limits (an omitted limit falls back to the service default)."""
    from inferq.keys import Limits

    if not _key_store_call("set_limits", key, Limits(rpm, tpm, max_jobs)):
        console.print(f"no active key {key!r}")
        raise typer.Exit(1)
    console.print(f"limits of {key}: rpm={rpm} tpm={tpm} max_jobs={max_jobs}")


@keys_app.command("list")
def keys_list() -> None:
    """List keys (never their secret)."""
    table = Table(
        Column("prefix", no_wrap=True),
        "name",
        "admin",
        "rpm",
        "tpm",
        "max jobs",
        "created",
        "revoked",
        Column("id", no_wrap=True),
    )
    from inferq.keys import KeyRecord

    for record in cast(list[KeyRecord], _key_store_call("list")):
        limits = record.limits
        table.add_row(
            record.prefix,
            record.name,
            "yes" if record.admin else "",
            *(
                str(v) if v is not None else "-"
                for v in (limits.rpm, limits.tpm, limits.max_active_jobs)
            ),
            f"{record.created_at:%Y-%m-%d %H:%M}",
            f"{record.revoked_at:%Y-%m-%d %H:%M}" if record.revoked_at else "",
            record.id,
        )
    # Piped output has no terminal width: do not squeeze the table into 80 columns.
    (console if console.is_terminal else Console(width=200)).print(table)


@keys_app.command("revoke")
def keys_revoke(key: Annotated[str, typer.Argument(help="Key id or prefix.")]) -> None:
    """Revoke a key by id or prefix."""
    if not _key_store_call("revoke", key):
        console.print(f"no active key {key!r}")
        raise typer.Exit(1)
    console.print(f"revoked {key}")


@app.command()
def submit(
    model: str,
    prompt: str,
    max_tokens: Annotated[int, typer.Option()] = 128,
    priority: Annotated[str, typer.Option()] = "normal",
    stream: Annotated[bool, typer.Option("--stream", help="Print tokens as they come.")] = False,
    wait: Annotated[bool, typer.Option("--wait", help="Wait and print the finished job.")] = False,
) -> None:
    """Submit a prompt to the running service (INFERQ_API_URL, INFERQ_API_KEY)."""
    from inferq.client import InferqClient

    settings = get_settings()
    if settings.api_key is None:
        console.print("set INFERQ_API_KEY to a key from `inferq keys create`", style="red")
        raise typer.Exit(2)
    with InferqClient(settings.resolved_api_url, settings.api_key.get_secret_value()) as client:
        job = client.submit(model, prompt=prompt, max_tokens=max_tokens, priority=priority)
        if stream:
            for text in client.stream_text(job["id"]):
                sys.stdout.write(text)
                sys.stdout.flush()
            sys.stdout.write("\n")
            job = client.get(job["id"])
        elif wait:
            job = client.wait(job["id"])
        print(orjson.dumps(job, option=orjson.OPT_INDENT_2).decode())
        if job["status"] == "failed":
            raise typer.Exit(1)


@app.command()
def top(
    interval: Annotated[float, typer.Option(help="Seconds between refreshes.")] = 2.0,
    once: Annotated[bool, typer.Option("--once", help="Print one snapshot and exit.")] = False,
) -> None:
    """Live view: queues, workers, jobs, throughput and error rate, cost per model."""
    from inferq.top import run_top

    run_top(_settings(), console, interval, once)


def main() -> None:
    app()
