"""`orchestrator pipelines …` and `orchestrator runs …`: the HTTP API from a terminal.

The server is `ORCHESTRATOR_URL` (default http://127.0.0.1:3000) and the key
`ORCHESTRATOR_API_KEY`. `--json` prints what the API returned, for scripts. Exit status:
0 success, 1 a followed run ended failed or cancelled, 2 bad usage, 3 the API refused
(its error text is printed) or could not be reached.
"""

from __future__ import annotations

import functools
import json
import sys
import time
from collections.abc import Callable
from typing import Any

import click

from cli.follow import TERMINAL, Follower, elapsed, header, step_lines
from cli.http import DEFAULT_URL, ApiFailure, Client
from orchestrator.vocab import OnFailure, RunIf, RunStatus, StepStatus, values

API_ERROR = 3


class ApiError(click.ClickException):
    exit_code = API_ERROR


def client_options(command: Callable) -> Callable:
    """--url / --api-key (or their environment variables) on a command or group."""

    @click.option("--url", envvar="ORCHESTRATOR_URL", default=DEFAULT_URL, show_default=True,
                  help="The service's address (ORCHESTRATOR_URL).")
    @click.option("--api-key", envvar="ORCHESTRATOR_API_KEY", default=None,
                  help="API key (ORCHESTRATOR_API_KEY).")
    @click.pass_context
    @functools.wraps(command)
    def wrapper(ctx: click.Context, url: str, api_key: str | None, *args: Any, **kwargs: Any):
        ctx.obj = Client(url, api_key)
        return ctx.invoke(command, *args, **kwargs)

    return wrapper


def calling_api(command: Callable) -> Callable:
    """Turn the API's refusals into its error text on stderr and exit status 3."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any):
        try:
            return command(*args, **kwargs)
        except ApiFailure as exc:
            raise ApiError(exc.message) from None

    return wrapper


def client() -> Client:
    return click.get_current_context().find_object(Client)


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


def when(ts: int | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts)) if ts else "-"


def table(rows: list[list[str]], headers: list[str]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows, strict=True)]
    for row in [headers, *rows]:
        click.echo("  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def resolve_pipeline(api: Client, ref: str) -> dict[str, Any]:
    """A pipeline by id (digits) or by exact name; a name two pipelines share is refused."""
    pipelines = api.pipelines()
    if ref.isdigit():
        found = [p for p in pipelines if p["id"] == int(ref)]
    else:
        found = [p for p in pipelines if p["name"] == ref]
    if not found:
        raise ApiError(f"no pipeline {'with id' if ref.isdigit() else 'named'} {ref!r}")
    if len(found) > 1:
        ids = ", ".join(str(p["id"]) for p in found)
        raise ApiError(f"{len(found)} pipelines are named {ref!r} (ids {ids}): use an id")
    return found[0]


def parse_inputs(pairs: tuple[str, ...]) -> dict[str, Any]:
    """`k=v` gives the string v; `k:=v` parses v as JSON (numbers, booleans, objects)."""
    inputs: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep:
            raise click.BadParameter(f"{pair!r}: expected KEY=VALUE", param_hint="--input")
        value: Any = raw
        if key.endswith(":"):
            key = key[:-1]
            try:
                value = json.loads(raw)
            except ValueError as exc:
                raise click.BadParameter(f"{pair!r}: not JSON ({exc})",
                                         param_hint="--input") from None
        if not key:
            raise click.BadParameter(f"{pair!r}: empty key", param_hint="--input")
        inputs[key] = value
    return inputs


# -- pipelines ---------------------------------------------------------------------------


@click.group(name="pipelines")
@client_options
def pipelines_group() -> None:
    """Pipelines on the server (ORCHESTRATOR_URL)."""


@pipelines_group.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")
@calling_api
def pipelines_list(as_json: bool) -> None:
    """List pipelines with their steps and run counts."""
    pipelines = client().pipelines()
    if as_json:
        emit_json({"pipelines": pipelines})
        return
    rows = [[str(p["id"]), p["name"], str(len(p["steps"])),
             "{total} ({completed} ok, {failed} failed, {running} active)".format(**p["runs"]),
             when(p["last_used_at"])] for p in pipelines]
    table(rows, ["ID", "NAME", "STEPS", "RUNS", "LAST RUN"])


@pipelines_group.command(name="show")
@click.argument("pipeline")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")
@calling_api
def pipelines_show(pipeline: str, as_json: bool) -> None:
    """One pipeline (NAME or ID) and its step chain."""
    found = resolve_pipeline(client(), pipeline)
    if as_json:
        emit_json({"pipeline": found})
        return
    click.echo(f"#{found['id']} {found['name']}")
    if found.get("description"):
        click.echo(f"  {found['description']}")
    for i, step in enumerate(found["steps"], 1):
        marks = [] if step["on_failure"] == OnFailure.STOP else ["continue on fail"]
        if step.get("run_if", RunIf.ON_SUCCESS) != RunIf.ON_SUCCESS:
            marks.append(f"run if {step['run_if']}")
        note = f"  ({', '.join(marks)})" if marks else ""
        click.echo(f"  {i:>2}. {step['template_name']}{note}")


# -- runs --------------------------------------------------------------------------------


@click.group(name="runs")
@client_options
def runs_group() -> None:
    """Start, watch, advance, rerun and cancel runs on the server (ORCHESTRATOR_URL)."""


def finish(run: dict[str, Any], as_json: bool, followed: bool) -> None:
    if as_json:
        emit_json({"run": run})
    if followed and run["status"] != RunStatus.COMPLETED:
        sys.exit(1)


def watch(run: dict[str, Any], as_json: bool, interval: float) -> dict[str, Any]:
    if as_json:  # scripts get the final state only
        while run["status"] not in TERMINAL:
            time.sleep(interval)
            run = client().run(run["id"])
        return run
    stream = sys.stdout
    try:
        return Follower(client(), stream, stream.isatty(), interval).follow(run)
    except KeyboardInterrupt:
        click.echo(f"\nstopped watching; the run goes on: orchestrator runs show {run['id']}",
                   err=True)
        sys.exit(130)


def follow_options(command):
    """--follow, --interval and --json, for the commands that make a run."""
    for option in reversed([
        click.option("--follow", "-f", is_flag=True,
                     help="Show the run live until it ends; exit 0 only if it completed."),
        click.option("--interval", default=0.5, show_default=True, type=float,
                     help="Seconds between polls while following."),
        click.option("--json", "as_json", is_flag=True,
                     help="Print the API's JSON (the final state with --follow)."),
    ]):
        command = option(command)
    return command


@runs_group.command(name="start")
@click.argument("pipeline")
@click.option("--input", "-i", "inputs", multiple=True, metavar="KEY=VALUE",
              help="A run input (repeatable); KEY:=JSON for a non-string value.")
@follow_options
@calling_api
def runs_start(pipeline: str, inputs: tuple[str, ...], follow: bool, interval: float,
               as_json: bool) -> None:
    """Start a run of PIPELINE (a name or an id)."""
    run_inputs = parse_inputs(inputs)
    api = client()
    run = api.start(resolve_pipeline(api, pipeline)["id"], run_inputs)
    if follow:
        run = watch(run, as_json, interval)
    elif not as_json:
        click.echo(f"started run #{run['id']} of {run['pipeline_name']} "
                   f"({len(run['steps_snapshot'])} steps): orchestrator runs show {run['id']}")
    finish(run, as_json, follow)


@runs_group.command(name="show")
@click.argument("run_id", type=int)
@click.option("--follow", "-f", is_flag=True, help="Keep showing it until it ends.")
@click.option("--interval", default=0.5, show_default=True, type=float)
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")
@calling_api
def runs_show(run_id: int, follow: bool, interval: float, as_json: bool) -> None:
    """A run's status and its steps."""
    run = client().run(run_id)
    if follow:
        run = watch(run, as_json, interval)
    elif not as_json:
        now = time.time()
        click.echo(header(run, now))
        colour = sys.stdout.isatty()
        for line in step_lines(run, now, 0, colour):
            click.echo(line)
    finish(run, as_json, follow)


@runs_group.command(name="cancel")
@click.argument("run_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")
@calling_api
def runs_cancel(run_id: int, as_json: bool) -> None:
    """Cancel a run and end its running agent session."""
    run = client().cancel(run_id)
    if as_json:
        emit_json({"run": run})
    else:
        click.echo(f"run #{run['id']} {run['status']}")


@runs_group.command(name="advance")
@click.argument("run_id", type=int)
@click.option("--done", "outcome", flag_value="done", help="The current step succeeded.")
@click.option("--failed", "outcome", flag_value="failed", help="The current step failed.")
@click.option("--error", default=None, help="Why it failed (with --failed).")
@click.option("--step", "step", type=click.IntRange(1), default=None, metavar="K",
              help="Only if step K (1-based, as shown) is the current one: a guard against "
                   "resolving a step that moved on meanwhile.")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")
@calling_api
def runs_advance(run_id: int, outcome: str | None, error: str | None, step: int | None,
                 as_json: bool) -> None:
    """Resolve RUN's current step (a manual step, or an override of a running one)."""
    if outcome is None:
        raise click.UsageError("say how the step ended: --done or --failed")
    if error is not None and outcome == "done":
        raise click.UsageError("--error goes with --failed")
    api = client()
    index = step - 1 if step is not None else api.run(run_id)["current_step"]
    run = api.advance(run_id, outcome == "done", error, None if step is None else index)
    if as_json:
        emit_json({"run": run})
        return
    steps = run["steps_snapshot"]
    now = steps[index]["status"] if index < len(steps) else "?"
    if now == StepStatus.PENDING:
        now = f"failed, retrying (attempt {steps[index]['attempt']})"
    click.echo(f"run #{run['id']}: step {index + 1} {now}; run {run['status']}")


@runs_group.command(name="rerun")
@click.argument("run_id", type=int)
@click.option("--from", "from_step", type=click.IntRange(1), default=None, metavar="K",
              help="Run again from step K (1-based, as shown); the steps before it are "
                   "carried over as they ended. Default: the first that did not complete.")
@click.option("--input", "-i", "inputs", multiple=True, metavar="KEY=VALUE",
              help="Replace the run's inputs (repeatable); default: the source run's.")
@follow_options
@calling_api
def runs_rerun(run_id: int, from_step: int | None, inputs: tuple[str, ...], follow: bool,
               interval: float, as_json: bool) -> None:
    """A new run of finished run RUN's own steps, from a step on."""
    run_inputs = parse_inputs(inputs)
    run = client().rerun(run_id, None if from_step is None else from_step - 1,
                         run_inputs or None)
    if follow:
        run = watch(run, as_json, interval)
    elif not as_json:
        carried = sum(s.get("reused", False) for s in run["steps_snapshot"])
        click.echo(f"run #{run['id']} reruns #{run_id} from step {carried + 1} "
                   f"({carried} carried over): orchestrator runs show {run['id']}")
    finish(run, as_json, follow)


@runs_group.command(name="list")
@click.option("--pipeline", default=None, help="Only this pipeline's runs (NAME or ID).")
@click.option("--status", default=None,
              type=click.Choice(values(RunStatus)))
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 200))
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")
@calling_api
def runs_list(pipeline: str | None, status: str | None, limit: int, as_json: bool) -> None:
    """Recent runs, newest first."""
    api = client()
    pipeline_id = resolve_pipeline(api, pipeline)["id"] if pipeline else None
    runs = api.runs(limit=limit, status=status, pipeline_id=pipeline_id)
    if as_json:
        emit_json({"runs": runs})
        return
    now = time.time()
    rows = [[str(r["id"]), r["pipeline_name"], r["status"],
             f"{min(r['current_step'] + 1, len(r['steps_snapshot']))}/{len(r['steps_snapshot'])}",
             when(r["created_at"]), elapsed(r["started_at"], r["completed_at"], now),
             r["triggered_by"]] for r in runs]
    table(rows, ["ID", "PIPELINE", "STATUS", "STEP", "CREATED", "TOOK", "BY"])
