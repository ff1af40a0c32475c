"""`orchestrator apply -f FILE` and `orchestrator export`: pipelines as code, over the API.

Apply sends the file to `POST /api/apply`, which plans and checks every item and writes
all of it in one transaction or nothing; it prints the plan (`+` create, `~` update with
the fields that change, `=` unchanged). `--dry-run` has the server plan and check without
writing. Export writes the server's templates, pipelines and schedules in the same format.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from cli.http import ApiFailure, Client, finding_lines
from cli.remote import calling_api, client, client_options, emit_json
from orchestrator import pipelines_file as pf


class FileProblem(click.ClickException):
    exit_code = 2


def _read(path: str) -> pf.Document:
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except OSError as exc:
        raise FileProblem(f"cannot read {path}: {exc.strerror}") from None
    try:
        return pf.load(text, path)
    except pf.FileError as exc:
        raise FileProblem(str(exc)) from None


def _plan(api: Client, doc: pf.Document, dry_run: bool) -> list[pf.Change]:
    """The server's plan for `doc`, carried out unless `dry_run`: all of it, or, when any
    item is refused, none of it (each refused item is listed on stderr)."""
    body = {"templates": doc.templates, "pipelines": doc.pipelines, "dry_run": dry_run}
    if doc.schedules:  # a server from before schedules refuses the key
        body["schedules"] = doc.schedules
    try:
        answer = api.post("/api/apply", body)
    except ApiFailure as exc:
        for item in exc.items:
            click.echo(f"  {item.get('kind')} {item.get('name')!r}: {item.get('error')}"
                       + "".join(finding_lines(item.get("injection"))), err=True)
        raise
    return [pf.Change(c["kind"], c["action"], c["name"], c["id"],
                      {k: (d["from"], d["to"]) for k, d in c["diff"].items()})
            for c in answer["changes"]]


@click.command(name="apply")
@click.option("-f", "--file", "paths", required=True, multiple=True,
              type=click.Path(dir_okay=False, allow_dash=True),
              help="A pipelines YAML file (- for stdin); repeat to apply several as one.")
@click.option("--dry-run", is_flag=True,
              help="Show what would change, checked by the server; change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
@client_options
@calling_api
def apply_cmd(paths: tuple[str, ...], dry_run: bool, as_json: bool) -> None:
    """Create or update templates, pipelines and schedules, by name, to match the
    file(s): all of it in one server transaction, or nothing."""
    try:
        doc = pf.merge([_read(path) for path in paths])
    except pf.FileError as exc:
        raise FileProblem(str(exc)) from None
    changes = _plan(client(), doc, dry_run)
    pending = [c for c in changes if c.action != "unchanged"]
    if as_json:
        emit_json({"dry_run": dry_run, "changes": [
            {"kind": c.kind, "action": c.action, "name": c.name, "id": c.id,
             "fields": sorted(c.diff)} for c in changes]})
        return
    for line in pf.describe(changes):
        click.echo(line)
    creates = sum(c.action == "create" for c in changes)
    if not pending:
        click.echo("nothing to change")
    else:
        verb = "would" if dry_run else "did"
        click.echo(f"{verb} create {creates}, update {len(pending) - creates}"
                   + (" (dry run: nothing changed)" if dry_run else ""))


@click.command(name="export")
@click.option("-o", "--output", default="-", type=click.Path(dir_okay=False, allow_dash=True),
              help="Where to write (default stdout).")
@click.option("--pipeline", "only", multiple=True,
              help="Only this pipeline and its templates (repeatable).")
@client_options
@calling_api
def export_cmd(output: str, only: tuple[str, ...]) -> None:
    """Write the server's templates, pipelines and schedules as a file `apply` reads."""
    api = client()
    try:
        text = pf.export(api.templates(), api.pipelines(), list(only) or None,
                         schedules=api.get("/api/schedules")["schedules"])
    except pf.FileError as exc:
        raise FileProblem(str(exc)) from None
    if output == "-":
        click.echo(text, nl=False)
    else:
        Path(output).write_text(text)
        click.echo(f"wrote {output}", err=True)
