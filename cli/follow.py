"""Following a run in the terminal: a live step list on a TTY, one line per change elsewhere.

On a terminal the block (a header and one line per step: symbol or spinner, name, status,
elapsed time) is redrawn in place; in a pipe or a CI log each step's change of status is
printed once, so the output reads top to bottom.
"""

from __future__ import annotations

import time
from typing import Any, TextIO

import click

from cli.http import ApiFailure, Client
from orchestrator.vocab import RunStatus, StepStatus

TERMINAL = tuple(s.value for s in (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED))
# A running step that only a person can end (a manual profile) is shown as this, not running.
WAITING = "waiting for you"
SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
SYMBOLS = {StepStatus.COMPLETED: "✓", StepStatus.FAILED: "✗", StepStatus.SKIPPED: "↷",
           StepStatus.PENDING: "·", RunStatus.CANCELLED: "✗", WAITING: "⏸"}
COLOURS = {StepStatus.COMPLETED: "green", StepStatus.FAILED: "red", StepStatus.RUNNING: "yellow",
           StepStatus.SKIPPED: "bright_black", StepStatus.PENDING: "bright_black",
           RunStatus.CANCELLED: "red", WAITING: "cyan"}


def elapsed(started: int | None, finished: int | None, now: float) -> str:
    if started is None:
        return ""
    seconds = max(0, int((finished if finished is not None else now) - started))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def usage_text(usage: dict[str, Any]) -> str:
    """Tokens in and out, and the cost when one is known: `1,210 in · 305 out · $0.0210`."""
    parts = [f"{usage.get('input_tokens') or 0:,} in", f"{usage.get('output_tokens') or 0:,} out"]
    if usage.get("cost_usd") is not None:
        parts.append(f"${usage['cost_usd']:.4f}")
    return " · ".join(parts)


def header(run: dict[str, Any], now: float) -> str:
    steps = run["steps_snapshot"]
    where = f"step {min(run['current_step'] + 1, len(steps))}/{len(steps)}"
    took = elapsed(run.get("started_at") or run.get("created_at"), run.get("completed_at"), now)
    spent = f"  {usage_text(run['usage'])}" if run.get("usage") else ""
    line = f"Run #{run['id']}  {run['pipeline_name']}  {run['status']}  {where}  {took}"
    return (line.rstrip() + spent).rstrip()


def step_lines(run: dict[str, Any], now: float, frame: int, colour: bool) -> list[str]:
    steps = run["steps_snapshot"]
    width = max((len(s["template_name"]) for s in steps), default=0)
    lines = []
    for step in steps:
        status = shown_status(step)
        mark = SPINNER[frame % len(SPINNER)] if status == StepStatus.RUNNING else SYMBOLS.get(status, "?")
        took = elapsed(step.get("started_at"), step.get("completed_at"), now)
        text = f"{step['step_index'] + 1:>2} {step['template_name']:<{width}}  {status:<9} {took}"
        if step.get("error") and status == StepStatus.FAILED:
            text += f"  {step['error'].splitlines()[0][:80]}"
        line = f"  {mark} {text.rstrip()}"
        lines.append(click.style(line, fg=COLOURS.get(status)) if colour else line)
    waiting = [s for s in steps if shown_status(s) == WAITING]
    if waiting and run["status"] not in TERMINAL:
        hint = (f"  {WAITING}: orchestrator runs advance {run['id']} --done | --failed "
                f"[--error TEXT] --step {waiting[0]['step_index'] + 1}")
        lines.append(click.style(hint, fg=COLOURS[WAITING]) if colour else hint)
    return lines


def shown_status(step: dict[str, Any]) -> str:
    return WAITING if step.get("waiting_for_person") else step["status"]


class Follower:
    def __init__(self, client: Client, out: TextIO, tty: bool, interval: float = 0.5):
        self.client = client
        self.out = out
        self.tty = tty
        self.interval = interval
        self._drawn = 0
        self._seen: dict[int, str] = {}  # step index → the status last printed

    def follow(self, run: dict[str, Any]) -> dict[str, Any]:
        """Show the run until it ends; returns its final state."""
        frame = 0
        next_poll = time.monotonic() + self.interval
        failures = 0
        if self.tty:
            self.out.write("\x1b[?25l")  # hide the cursor while redrawing
        try:
            while True:
                self._show(run, frame)
                if run["status"] in TERMINAL:
                    return run
                time.sleep(0.1 if self.tty else self.interval)
                frame += 1
                if time.monotonic() < next_poll:
                    continue
                next_poll = time.monotonic() + self.interval
                try:
                    run = self.client.run(run["id"])
                    failures = 0
                except ApiFailure as exc:
                    # A restart of the API or a blip of the network is not the run's end.
                    if 0 < exc.status < 500 or failures >= 20:
                        raise
                    failures += 1
        finally:
            if self.tty:
                self.out.write("\x1b[?25h")
                self.out.flush()

    def _show(self, run: dict[str, Any], frame: int) -> None:
        now = time.time()
        if self.tty:
            lines = [header(run, now), *step_lines(run, now, frame, colour=True)]
            if self._drawn:
                # back to the block's first line, and clear a longer block's leftovers
                self.out.write(f"\x1b[{self._drawn}F\x1b[J")
            self.out.write("".join(f"\x1b[2K{line}\n" for line in lines))
            self._drawn = len(lines)
        else:
            if not self._seen:
                self.out.write(header(run, now) + "\n")
            lines = step_lines(run, now, 0, False)
            for step, line in zip(run["steps_snapshot"], lines, strict=False):
                status = shown_status(step)
                if self._seen.get(step["step_index"]) != status:
                    self._seen[step["step_index"]] = status
                    if status != StepStatus.PENDING:
                        self.out.write(line.replace(SPINNER[0], "▸", 1) + "\n")
                        if status == WAITING:
                            self.out.write(lines[-1] + "\n")  # how to answer it
            if run["status"] in TERMINAL:
                self.out.write(header(run, now) + "\n")
        self.out.flush()
