"""`orchestrator`: run the service (up, api, worker, beat), migrate, manage keys."""

from __future__ import annotations

import logging
import os
import sys
import threading
import time

import click

from orchestrator import db, logs, masking, migrate, preflight, render_process, tallies
from orchestrator.auth import create_key, has_keys
from orchestrator.config import Settings
from orchestrator.vocab import Role, values


class _Main(click.Group):
    """Turns a failed preflight check into its one line, for every command."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except preflight.NotReady as exc:
            raise click.ClickException(str(exc)) from None


@click.group(cls=_Main)
def main() -> None:
    """Pipeline Orchestrator: multi-step agent pipelines that advance by themselves."""
    try:
        settings = Settings.from_env()
    except ValueError as exc:  # a bad setting: say which, before any command starts
        raise click.ClickException(str(exc)) from None
    logs.configure(settings.log_level, settings.log_format,
                   masking.known_secrets(settings))


@main.group(name="db")
def db_group() -> None:
    """Database schema."""


@db_group.command()
def upgrade() -> None:
    """Apply schema migrations to DATABASE_URL."""
    settings = Settings.from_env()
    if preflight.sqlite_file(settings.database_url) is None:  # a server: reachable, and there
        preflight.reach_database(settings.database_url)
    migrate.upgrade(settings.database_url)
    click.echo(f"database at {preflight.safe_url(settings.database_url)} is up to date")


@main.group()
def keys() -> None:
    """API keys."""


@keys.command(name="create")
@click.option("--name", required=True, help="Who the key is for (shown as triggered_by).")
@click.option("--role", required=True, type=click.Choice(values(Role)))
def create_key_cmd(name: str, role: str) -> None:
    """Create an API key and print it (it is stored hashed and shown only now)."""
    settings = Settings.from_env()
    preflight.check_schema(settings.database_url)
    db.init(settings)
    with db.session() as s:
        _, key = create_key(s, name, role)
    click.echo(key)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, help="Default: PORT, else 3000.")
@click.option("--concurrency", default=4, show_default=True, type=int,
              help="Steps run at once by the in-process worker.")
def up(host: str, port: int | None, concurrency: int) -> None:
    """API, web UI and a worker in one process (SQLite and an in-process broker by default)."""
    from werkzeug.serving import make_server

    from api import create_app
    from worker import tasks
    from worker.app import control_queue

    settings = Settings.from_env()
    port = port or settings.port
    _check_profiles(settings)
    preflight.check_port(host, port)  # before the database file is made
    _warn_short_key(settings)
    migrate.upgrade(settings.database_url)
    db.init(settings)
    _bootstrap_key(settings)
    render_process.pool_for(settings).warm()  # before any thread: see render_process
    app = create_app()
    celery = app.extensions["celery"]  # the worker below runs on the API's one Celery app
    server = make_server(host, port, app, threaded=True)
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    # `up` has no beat: these threads are its periodic tasks.
    executor = tasks.executor(celery)
    for name, seconds, work in (
        ("sweep", settings.sweep_seconds,
         lambda: tallies.record_sweep(settings, vars(executor.sweep()))),
        ("schedules", settings.schedule_tick_seconds,
         lambda: tasks.fire_due_schedules(executor.dispatcher)),
        ("hooks", settings.hook_tick_seconds, lambda: tasks.deliver_due_hooks(executor)),
    ):
        threading.Thread(target=_every, args=(seconds, work, name), name=name,
                         daemon=True).start()
    click.echo(f"Pipeline Orchestrator on http://{host}:{port} "
               f"(database {preflight.safe_url(settings.database_url)}, "
               f"broker {preflight.safe_url(settings.broker_url)})")
    celery.Worker(
        pool="threads",
        concurrency=concurrency,
        queues=[settings.queue, control_queue(settings)],
        loglevel=settings.log_level,
        without_mingle=True,
        without_gossip=True,
    ).start()


def _check_profiles(settings: Settings) -> None:
    """Refuse to serve with an AGENTS_FILE that cannot be read, or a profile that could
    not run a step: every step using it would fail, or never be picked up."""
    from orchestrator.profiles import ProfileError, load_profiles
    from orchestrator.runtimes import check_profiles

    try:
        problems = check_profiles(load_profiles(settings.agents_file))
    except ProfileError as exc:
        raise click.ClickException(str(exc)) from None
    if problems:
        raise click.ClickException("\n".join(problems))


# Keys this service makes are 46 characters; a shorter bootstrap key is easier to guess
# (Mission Control's own test key has 22, so it is warned about, not refused).
MIN_KEY_LENGTH = 32


def _warn_short_key(settings: Settings) -> None:
    if settings.api_key and len(settings.api_key) < MIN_KEY_LENGTH:
        click.echo(f"warning: API_KEY has {len(settings.api_key)} characters; use at least "
                   f"{MIN_KEY_LENGTH} (e.g. from `orchestrator keys create`)", err=True)


def _bootstrap_key(settings: Settings) -> None:
    if settings.api_key:
        return
    with db.session() as s:
        if has_keys(s):
            return
        _, key = create_key(s, "admin", Role.ADMIN)
    click.echo(f"No API key existed: created an admin key (shown once, store it): {key}")


def _every(seconds: float, work, name: str) -> None:
    log = logging.getLogger(f"orchestrator.{name}")
    while True:
        time.sleep(seconds)
        try:
            work()
        except Exception:
            log.exception("%s failed", name)


# Threads per gunicorn worker; open event streams may take all but a few of them
# (EVENTS_MAX_STREAMS_PER_PROCESS), so that the rest of the API keeps answering.
API_THREADS = 16


@main.command()
@click.option("--host", default="0.0.0.0", show_default=True)
@click.option("--port", type=int, help="Default: PORT, else 3000.")
@click.option("--workers", default=2, show_default=True, type=int)
def api(host: str, port: int | None, workers: int) -> None:
    """The HTTP API and UI under gunicorn (production)."""
    settings = Settings.from_env()
    port = port or settings.port
    _check_profiles(settings)
    if settings.events_max_streams_per_process >= API_THREADS:
        raise click.ClickException(
            f"EVENTS_MAX_STREAMS_PER_PROCESS must be less than {API_THREADS}, the threads of "
            f"each API process, or open event streams can leave none for other requests")
    preflight.check_schema(settings.database_url)
    preflight.check_port(host, port)
    _warn_short_key(settings)
    os.execvp(sys.executable, [
        sys.executable, "-m", "gunicorn", "api.wsgi:app",
        "--bind", f"{host}:{port}", "--workers", str(workers),
        "--access-logfile", "-", "--graceful-timeout", "10",
        # threads, so that open event streams do not each hold a whole worker
        "--worker-class", "gthread", "--threads", str(API_THREADS),
        # longer than clients and proxies keep idle connections, so that gunicorn never
        # closes one just as a client reuses it
        "--keep-alive", "75",
        "--logger-class", "api.gunicorn_logger.Logger", "--log-level", settings.log_level.lower(),
    ])


@main.command(context_settings={"ignore_unknown_options": True})
@click.option("--concurrency", default=None, type=int, help="Worker processes (default: cores).")
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
def worker(concurrency: int | None, celery_args: tuple[str, ...]) -> None:
    """A Celery worker that runs steps (production)."""
    from worker.app import celery, control_queue

    settings = Settings.from_env()
    _check_profiles(settings)
    _warn_short_key(settings)
    preflight.check_schema(settings.database_url)
    preflight.check_broker(celery)
    argv = ["worker", "-Q", f"{settings.queue},{control_queue(settings)}",
            "--loglevel", settings.log_level]
    if concurrency:
        argv += ["--concurrency", str(concurrency)]
    celery.worker_main(argv + list(celery_args))


@main.command(context_settings={"ignore_unknown_options": True})
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
def beat(celery_args: tuple[str, ...]) -> None:
    """Celery beat: ticks the sweeper and the schedules (production; one is enough, and a
    second fires no schedule twice)."""
    from worker.app import celery

    preflight.check_broker(celery)
    celery.start(["beat", "--loglevel", Settings.from_env().log_level, *celery_args])


@main.command(context_settings={"ignore_unknown_options": True})
@click.option("--address", default=None,
              help="Address to bind (default: FLOWER_ADDRESS, else 127.0.0.1).")
@click.option("--port", default=None, type=int, help="Port (default: FLOWER_PORT, else 5555).")
@click.argument("flower_args", nargs=-1, type=click.UNPROCESSED)
def flower(address: str | None, port: int | None, flower_args: tuple[str, ...]) -> None:
    """Flower, the Celery monitor, on this install's broker (FLOWER_* variables apply).

    It shows task arguments and can shut workers down, so it serves any address but
    loopback only with authentication (FLOWER_BASIC_AUTH, FLOWER_AUTH, or their options).
    """
    from worker.app import celery

    address = os.environ.get("FLOWER_ADDRESS", "127.0.0.1") if address is None else address
    if not _loopback(address) and not _flower_auth(flower_args):
        raise click.ClickException(
            f"Flower on {address or 'every address'} needs authentication: set "
            f"FLOWER_BASIC_AUTH=user:password (or FLOWER_AUTH), or bind 127.0.0.1")
    # Flower reads FLOWER_PORT itself; an option given here wins over it, as usual.
    options = [f"--address={address}"] + ([f"--port={port}"] if port is not None else [])
    celery.start(["flower", *options, *flower_args])


def _loopback(address: str) -> bool:
    import ipaddress

    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:  # a host name, or "" (every address)
        return False


def _flower_auth(flower_args: tuple[str, ...]) -> bool:
    if os.environ.get("FLOWER_BASIC_AUTH") or os.environ.get("FLOWER_AUTH"):
        return True
    return any(arg.startswith(("--basic-auth", "--basic_auth", "--auth"))
               for arg in flower_args)


def _client_commands() -> None:
    from cli.as_code import apply_cmd, export_cmd
    from cli.remote import pipelines_group, runs_group

    for command in (pipelines_group, runs_group, apply_cmd, export_cmd):
        main.add_command(command)


_client_commands()
