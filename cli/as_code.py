"""`orchestrator apply -f FILE` and `orchestrator export`: pipelines as code, over the API.

Apply prints its plan (`+` create, `~` update with the fields that change, `=` unchanged)
and carries it out, templates first; `--dry-run` only prints it. Export writes the
server's templates and pipelines in the same format.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from cli.http import ApiFailure, Client
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


def carry_out(api: Client, changes: list[pf.Change], templates: list[dict[str, Any]]) -> None:
    ids = {t["name"]: t["id"] for t in templates}
    for c in changes:
        if c.kind != "template" or c.action == "unchanged":
            continue
        try:
            if c.action == "create":
                ids[c.name] = api.post("/api/workflows", c.body)["template"]["id"]
            else:
                api.put("/api/workflows", {"id": c.id, **c.body})
        except ApiFailure as exc:  # say which template, above the API's own reasons
            raise ApiFailure(exc.status, f"template {c.name!r}: {exc.message}") from None
        click.echo(f"{'created' if c.action == 'create' else 'updated'} template {c.name!r}",
                   err=True)
    for c in changes:
        if c.kind != "pipeline" or c.action == "unchanged":
            continue
        body = pf.pipeline_body(c.body, ids)
        if c.action == "create":
            api.post("/api/pipelines", body)
        else:
            api.put("/api/pipelines", {"id": c.id, **body})
        click.echo(f"{'created' if c.action == 'create' else 'updated'} pipeline {c.name!r}",
                   err=True)


@click.command(name="apply")
@click.option("-f", "--file", "paths", required=True, multiple=True,
              type=click.Path(dir_okay=False, allow_dash=True),
              help="A pipelines YAML file (- for stdin); repeat to apply several as one.")
@click.option("--dry-run", is_flag=True, help="Show what would change, change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
@client_options
@calling_api
def apply_cmd(paths: tuple[str, ...], dry_run: bool, as_json: bool) -> None:
    """Create or update templates and pipelines, by name, to match the file(s)."""
    try:
        doc = pf.merge([_read(path) for path in paths])
    except pf.FileError as exc:
        raise FileProblem(str(exc)) from None
    api = client()
    templates = api.templates()
    try:
        changes = pf.plan(doc, templates, api.pipelines())
    except pf.FileError as exc:
        raise FileProblem(str(exc)) from None
    pending = [c for c in changes if c.action != "unchanged"]
    if as_json:
        emit_json({"dry_run": dry_run, "changes": [
            {"kind": c.kind, "action": c.action, "name": c.name, "id": c.id,
             "fields": sorted(c.diff)} for c in changes]})
    else:
        for line in pf.describe(changes):
            click.echo(line)
    if not dry_run and pending:
        carry_out(api, changes, templates)
    if not as_json:
        creates = sum(c.action == "create" for c in changes)
        updates = len(pending) - creates
        if not pending:
            click.echo("nothing to change")
        else:
            verb = "would" if dry_run else "did"
            click.echo(f"{verb} create {creates}, update {updates}"
                       + (" (dry run: nothing changed)" if dry_run else ""))


@click.command(name="export")
@click.option("-o", "--output", default="-", type=click.Path(dir_okay=False, allow_dash=True),
              help="Where to write (default stdout).")
@click.option("--pipeline", "only", multiple=True,
              help="Only this pipeline and its templates (repeatable).")
@client_options
@calling_api
def export_cmd(output: str, only: tuple[str, ...]) -> None:
    """Write the server's templates and pipelines as a file `apply` reads."""
    api = client()
    try:
        text = pf.export(api.templates(), api.pipelines(), list(only) or None)
    except pf.FileError as exc:
        raise FileProblem(str(exc)) from None
    if output == "-":
        click.echo(text, nl=False)
    else:
        Path(output).write_text(text)
        click.echo(f"wrote {output}", err=True)
