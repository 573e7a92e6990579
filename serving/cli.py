"""`refund-risk serve`, `refund-risk keys ...` and `refund-risk events export|replay`: run the
scoring service, manage its API keys, hand what it learnt (decided requests, reviewers'
outcomes) back to training, and run a history's last days through it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

from refund_risk.console import console, reports_errors
from refund_risk.errors import ConfigurationError
from refund_risk.settings import Settings, load_settings

keys_app = typer.Typer(help="API keys of the scoring service.", no_args_is_help=True)
events_app = typer.Typer(help="The service's event store.", no_args_is_help=True)


def _server_options(
    host: str, port: int, log_level: str, workers: int = 1, factory: bool = False
) -> dict[str, Any]:
    """uvicorn's options for the service: no access log (it costs about 30% of throughput; the
    latency histograms say more)."""
    return {
        "host": host,
        "port": port,
        "workers": workers,
        "access_log": False,
        "log_level": log_level,
        "loop": "auto",
        "http": "auto",
        "timeout_graceful_shutdown": 10,
        "factory": factory,
    }


def run_server(
    app: Any,
    host: str,
    port: int,
    log_level: str = "warning",
    workers: int = 1,
    factory: bool = False,
) -> None:
    """Serve an ASGI app the way the service always runs: uvicorn, no access log.

    With one worker, `app` is the app (or an import string) and runs in this process; with
    more, it must be an import string, and uvicorn's own supervisor runs that many worker
    processes on one socket. A start that fails (in any worker) ends the command with
    uvicorn's start-up failure code (3), after the worker has logged why.

    The access log costs about 30% of throughput; the latency histograms say more.
    """
    import uvicorn
    from uvicorn.config import STARTUP_FAILURE
    from uvicorn.supervisors import Multiprocess

    options = _server_options(host, port, log_level, workers=workers, factory=factory)
    if workers == 1:
        uvicorn.run(app, **options)  # exits with STARTUP_FAILURE itself when the start fails
        return
    if not isinstance(app, str):
        raise TypeError("several workers need the app as an import string")
    config = uvicorn.Config(app, **options)
    supervisor = Multiprocess(config, sockets=[config.bind_socket()])
    supervisor.run()
    if any(process.exitcode == STARTUP_FAILURE for process in supervisor.processes):
        console.print("[bold red]error:[/] the service did not start (the reason is above)")
        raise SystemExit(STARTUP_FAILURE)


def serve(
    host: Annotated[
        str | None, typer.Option(help="Address to listen on (default: settings).")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: settings).")] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn's log level.")] = "info",
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            help="Worker processes on one port (uvicorn's own supervisor). More than one "
            "needs PostgreSQL: SQLite refuses.",
        ),
    ] = 1,
) -> None:
    """Run the scoring service (OpenAPI docs at /docs).

    Its port opens and answers /healthz before the service is imported; /readyz says 200 once
    it can decide.
    """
    # One OpenMP thread, set before LightGBM is first imported: single-row predictions on more
    # threads are slower and, under load, collapse.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    _serve(host, port, log_level, workers)


@reports_errors
def _serve(host: str | None, port: int | None, log_level: str, workers: int) -> None:
    settings = load_settings()
    assert settings.database_url is not None
    if workers > 1:
        from serving.startup import SQLITE_ONE_PROCESS, is_sqlite

        if is_sqlite(settings.database_url):
            raise ConfigurationError(f"--workers {workers} refused. {SQLITE_ONE_PROCESS}")
    host = host or settings.api_host
    port = port or settings.api_port
    each = f"{workers} workers" if workers > 1 else "one worker"
    console.print(f"serving on http://{host}:{port} with {each} (docs: http://{host}:{port}/docs)")
    if workers == 1:
        _serve_one(settings, host, port, log_level)
    else:
        run_server("serving.asgi:app", host, port, log_level, workers)


def _serve_one(settings: Settings, host: str, port: int, log_level: str) -> None:
    """One worker: the port is bound and answers `/healthz` before the service is imported
    (`serving.front`), then uvicorn serves the same socket."""
    from serving.front import HealthFront, bind

    try:
        sock = bind(host, port)
    except OSError as exc:
        raise ConfigurationError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    with HealthFront(sock):
        import uvicorn
        from uvicorn.config import STARTUP_FAILURE

        from serving.app import create_app

        app = create_app(settings, served=True)
        config = uvicorn.Config(app, **_server_options(host, port, log_level))
        config.load()
    server = uvicorn.Server(config)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    if not server.started:
        raise SystemExit(STARTUP_FAILURE)


def _engine() -> Any:
    from features.store import settings_engine
    from serving import db

    engine = settings_engine(load_settings())
    db.migrate(engine)
    return engine


@keys_app.command("create")
@reports_errors
def create(
    role: Annotated[str, typer.Option(help="scorer, reviewer or admin.")],
    name: Annotated[str, typer.Option(help="Who or what the key is for.")] = "",
) -> None:
    """Create a key; its token is printed once (stdout) and only a hash is stored."""
    from serving.auth import Role, create_key

    try:
        chosen = Role(role)
    except ValueError:
        raise typer.BadParameter(
            f"unknown role {role!r}; roles: {', '.join(r.value for r in Role)}", param_hint="--role"
        ) from None
    engine = _engine()
    try:
        key, token = create_key(engine, chosen, name)
    finally:
        engine.dispose()
    console.print(f"created {key.role.value} key {key.key_id}; the token is shown only now:")
    typer.echo(token)


@keys_app.command("list")
@reports_errors
def list_() -> None:
    """Every key: id, role, name, created, revoked."""
    from serving.auth import list_keys

    engine = _engine()
    try:
        keys = list_keys(engine)
    finally:
        engine.dispose()
    if not keys:
        typer.echo("no keys yet: `refund-risk keys create --role scorer`")
        return
    typer.echo(f"{'id':<14} {'role':<9} {'created':<20} {'revoked':<20} name")
    for key in keys:
        revoked = key.revoked_at.strftime("%Y-%m-%d %H:%M:%S") if key.revoked_at else "-"
        typer.echo(
            f"{key.key_id:<14} {key.role.value:<9} "
            f"{key.created_at.strftime('%Y-%m-%d %H:%M:%S'):<20} {revoked:<20} {key.name}"
        )


@keys_app.command("revoke")
@reports_errors
def revoke(key_id: Annotated[str, typer.Argument(help="The key's id (see `keys list`).")]) -> None:
    """Revoke a key; a running service refuses it within `api_key_cache_seconds`."""
    from serving.auth import revocation_notice, revoke_key

    engine = _engine()
    try:
        key = revoke_key(engine, key_id)
    finally:
        engine.dispose()
    typer.echo(f"revoked {key.key_id} ({key.role.value}) at {key.revoked_at}")
    typer.echo(revocation_notice(load_settings().api_key_cache_seconds))


def export_events(settings: Settings, directory: Path) -> dict[str, int]:
    """Write every table of the event store as raw Parquet tables into `directory`.

    The event store holds what the service saw live (requests it decided, outcomes sent to it,
    reviewers' resolutions as outcomes with source `reviewer`); `features build --raw-dir`
    on the folder turns them into training tables, with each label's source.
    """
    import pyarrow as pa

    from data.schema import TABLES
    from data.storage import write_table
    from features.store import EventStore, settings_engine

    store = EventStore(settings_engine(settings))
    written: dict[str, int] = {}
    try:
        for name, spec in TABLES.items():
            rows = [row for batch in store.scan(name) for row in batch]
            write_table(pa.Table.from_pylist(rows, schema=spec.arrow_schema()), spec, directory)
            written[name] = len(rows)
    finally:
        store.dispose()
    return written


@events_app.command("export")
@reports_errors
def export(
    to: Annotated[Path, typer.Option("--to", help="Folder to write the raw tables (Parquet) to.")],
) -> None:
    """Write the event store as raw tables, for `refund-risk features build --raw-dir`.

    Reviewers' resolutions are outcomes with source `reviewer`: the training table keeps each
    label's source (`label_source`), so they can be weighed or left out.
    """
    written = export_events(load_settings(), to)
    for name, count in written.items():
        typer.echo(f"{name:<16} {count:>10,} rows")
    typer.echo(f"raw tables in {to}; next: refund-risk features build --raw-dir {to}")


@events_app.command("replay")
@reports_errors
def replay(
    directory: Annotated[
        Path, typer.Argument(help="Folder of raw tables (Parquet), e.g. data/generated/raw.")
    ],
    days: Annotated[
        int, typer.Option(min=1, max=90, help="Days at the history's end to replay.")
    ] = 14,
) -> None:
    """Store a shop's history and run its last days through the service's decision path, each
    request at its own time: the ops pages then show what the service would have done.

    Replaces the event store's contents as `features ingest --replace` does; the decisions and
    review cases it makes are recorded as any other. A review case is resolved, by the reviewer
    `history`, when the request's outcome became known, as the outcome says; one without an
    outcome by the history's end stays open.
    """
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from data.storage import read_world
    from refund_risk.console import progress_bar
    from serving.replay import replay_history

    settings = load_settings()
    tables = read_world(directory)
    with progress_bar("replay") as update:
        report = replay_history(settings, tables, days, progress=update)
    span = f"{report.start:%Y-%m-%d} to {report.end:%Y-%m-%d %H:%M}"
    typer.echo(f"replayed {span}: {report.decided:,} refund requests decided")
    for action, count in report.actions.most_common():
        typer.echo(f"  {action:<22} {count:>7,}")
    typer.echo(
        f"review cases resolved from their outcomes: {report.resolved:,}; "
        f"still open: {report.still_open:,}"
    )
    if report.refused:
        refused = ", ".join(f"{k} {v:,}" for k, v in report.refused.most_common())
        typer.echo(f"refused by the service's checks: {refused}")
