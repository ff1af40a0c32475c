"""/metrics in the Prometheus text format, derived from shared state at scrape time.

Nothing is counted in process memory: runs come from the counters kept on the pipelines
table, step durations from the histogram rows kept in step with transitions
(`orchestrator.durations`), running steps and injection marks from `run_steps`, queue depth from the broker,
sweeper actions from the shared tallies. Every API process therefore answers a scrape
with the same numbers, however many gunicorn and Celery processes there are.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from itertools import accumulate

from flask import Blueprint, Response, current_app
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from sqlalchemy import func, select

from api.auth import authenticate
from api.errors import ApiError
from orchestrator import db, durations, tallies
from orchestrator import transitions as t
from orchestrator.auth import ROLES
from orchestrator.models import Pipeline, PipelineRun, RunStep, StepDuration

bp = Blueprint("metrics", __name__)


@bp.get("/metrics")
def metrics():
    settings = current_app.config["SETTINGS"]
    if settings.metrics_auth != "none":
        identity = authenticate()
        if not identity.can(settings.metrics_auth):
            raise ApiError(
                403, f"/metrics needs the {settings.metrics_auth} role; your key has {identity.role}"
            )
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StateCollector(current_app.config["PROFILES"],
                                     current_app.extensions["celery"], settings))
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)


def check_metrics_auth(value: str) -> None:
    if value != "none" and value not in ROLES:
        raise ValueError(f"METRICS_AUTH must be none or one of {', '.join(ROLES)}, got {value!r}")


class StateCollector:
    """Reads the database, the broker and the tallies once per scrape."""

    def __init__(self, profiles, celery, settings):
        self.profiles = profiles
        self.celery = celery
        self.settings = settings

    def collect(self) -> Iterator[Metric]:
        started = time.perf_counter()
        with db.read_session() as s:
            pipelines = s.execute(select(
                Pipeline.id, Pipeline.name, Pipeline.runs_total, Pipeline.runs_completed,
                Pipeline.runs_failed, Pipeline.runs_running,
            ).order_by(Pipeline.id)).all()
            queued = dict(s.execute(
                select(PipelineRun.pipeline_id, func.count())
                .where(PipelineRun.queued).group_by(PipelineRun.pipeline_id)
            ).all())
            running = s.execute(
                select(RunStep.agent, func.count())
                .where(RunStep.status == t.RUNNING)
                .group_by(RunStep.agent)
            ).all()
            histogram = s.execute(_duration_query()).all()
            # Marks are few (a step flagged at render time) and read whole: JSON arrays
            # are expanded differently by each database, so they are counted here.
            marks = s.scalars(select(RunStep.injection).where(RunStep.injection.is_not(None)))
            findings = Counter((f.get("rule", "?"), _source_kind(f.get("source", "")))
                               for mark in marks for f in mark)
        yield from self._runs(pipelines, queued)
        yield self._running_steps(running)
        yield self._durations(histogram)
        yield self._injection(findings)
        yield from self._queues()
        yield from self._sweeps()
        yield GaugeMetricFamily(
            "orchestrator_metrics_scrape_seconds", "Time spent gathering these metrics.",
            value=time.perf_counter() - started)

    def _runtime(self, agent: str) -> str:
        profile = self.profiles.get(agent)
        return profile.runtime if profile else "unknown"

    def _runs(self, pipelines, queued: dict[int, int]) -> Iterator[Metric]:
        labels = ["pipeline", "pipeline_id"]
        started = CounterMetricFamily(
            "orchestrator_runs_started", "Runs started, by pipeline.", labels=labels)
        finished = CounterMetricFamily(
            "orchestrator_runs_finished", "Runs that ended, by pipeline and final status.",
            labels=[*labels, "status"])
        active = GaugeMetricFamily(
            "orchestrator_runs_active", "Runs not yet finished (pending or running).",
            labels=labels)
        waiting = GaugeMetricFamily(
            "orchestrator_runs_queued",
            "Active runs waiting for a slot under their pipeline's concurrency limit.",
            labels=labels)
        for pid, name, total, completed, failed, unfinished in pipelines:
            key = [name, str(pid)]
            started.add_metric(key, total)
            finished.add_metric([*key, t.COMPLETED], completed)
            finished.add_metric([*key, t.FAILED], failed)
            # The pipelines table keeps no cancelled counter: it is what is left.
            finished.add_metric([*key, t.CANCELLED], max(0, total - completed - failed - unfinished))
            active.add_metric(key, unfinished)
            waiting.add_metric(key, queued.get(pid, 0))
        yield from (started, finished, active, waiting)

    def _running_steps(self, rows) -> Metric:
        gauge = GaugeMetricFamily(
            "orchestrator_steps_running", "Steps running now, by agent profile and runtime.",
            labels=["agent", "runtime"])
        for agent, n in rows:
            gauge.add_metric([agent, self._runtime(agent)], n)
        return gauge

    def _durations(self, rows) -> Metric:
        hist = HistogramMetricFamily(
            "orchestrator_step_duration_seconds",
            "Duration of finished steps (their last attempt), by template, runtime and status.",
            labels=["template", "runtime", "status"])
        # per key: steps in each bucket (the last past every bound), and seconds in all
        counts: dict[tuple[str, str, str], list[int]] = defaultdict(
            lambda: [0] * (len(durations.BUCKETS) + 1))
        seconds: dict[tuple[str, str, str], float] = defaultdict(float)
        for name, agent, status, bucket, steps, total in rows:
            key = (name, self._runtime(agent), status)
            counts[key][bucket] += steps
            seconds[key] += total
        for key in sorted(counts):
            *within, everything = accumulate(counts[key])
            buckets = [(_le(b), c) for b, c in zip(durations.BUCKETS, within, strict=True)]
            buckets.append(("+Inf", everything))
            hist.add_metric(list(key), buckets, sum_value=seconds[key])
        return hist

    def _injection(self, findings: Counter) -> Metric:
        counter = CounterMetricFamily(
            "orchestrator_injection_findings",
            "Injection-guard findings in what flowed into steps' prompts, by rule and by "
            "source (inputs, or steps for an earlier step's output).",
            labels=["rule", "source"])
        for (rule, source), n in sorted(findings.items()):
            counter.add_metric([rule, source], n)
        return counter

    def _sweeps(self) -> Iterator[Metric]:
        try:
            counts = tallies.read_sweep(self.settings)
        except Exception:  # the broker is away: orchestrator_broker_up already says so
            return
        sweeps = CounterMetricFamily(
            "orchestrator_sweeper_actions", "Steps the sweeper resolved or resent, by action.",
            labels=["action"])
        for action, n in counts.items():
            sweeps.add_metric([action], n)
        yield sweeps

    def _queues(self) -> Iterator[Metric]:
        from worker.app import control_queue

        depth = GaugeMetricFamily(
            "orchestrator_queue_depth", "Messages waiting in a broker queue.", labels=["queue"])
        up = GaugeMetricFamily("orchestrator_broker_up", "1 if the broker answered this scrape.")
        try:
            with self.celery.connection_for_read() as conn:
                conn.ensure_connection(max_retries=1, timeout=2)
                for queue in (self.settings.queue, control_queue(self.settings)):
                    depth.add_metric([queue], _queue_size(conn, queue))
        except Exception:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield from (depth, up)


def _queue_size(conn, queue: str) -> int:
    from kombu.exceptions import ChannelError
    from kombu.transport.virtual import Channel as VirtualChannel

    channel = conn.channel()
    # Redis and the in-process broker only count on a declare (a passive one misreads
    # prefixed keys, and theirs creates nothing); AMQP brokers must not be redeclared.
    passive = not isinstance(channel, VirtualChannel)
    try:
        return channel.queue_declare(queue=queue, passive=passive).message_count
    except ChannelError:  # never declared: nothing waits in it
        return 0
    finally:
        try:
            channel.close()
        except Exception:
            pass


def _source_kind(source: str) -> str:
    return "steps" if source.startswith("steps") else "inputs"


def _le(bound: float) -> str:
    return str(float(bound))


def _duration_query():
    """The histogram's rows, summed over their shards."""
    d = StepDuration
    return (
        select(d.template_name, d.agent, d.status, d.bucket, func.sum(d.steps),
               func.sum(d.seconds))
        .group_by(d.template_name, d.agent, d.status, d.bucket)
    )
