// Pieces shared by the views: status dots, the step chain, run cards, inline errors.

import { api } from "./api.js";
import { h, svg, fmtAgo, fmtDuration } from "./dom.js";
import { state, canOperate, putRun, setError, loadRun } from "./store.js";

const ARROW = () => svg("0 0 20 12", ["M0 6h16", "M13 2l4 4-4 4"], "arrow");

export function dot(status, label, step) {
  return h("span.dot", {
    "data-status": status,
    "data-step": step,
    role: "img",
    "aria-label": label || status,
    title: label || status,
  });
}

export function badge(status) {
  return h("span.badge", { "data-status": status }, status);
}

export function inlineError(where) {
  const msg = state.errors.get(where);
  return msg ? h("p.inline-error", { role: "alert", "data-error-for": where }, msg) : null;
}

/** A pipeline's definition: template boxes joined by arrows, "continue on fail" marked. */
export function pipelineChain(steps) {
  return h(
    "div.chain",
    steps.map((s, i) => [
      h(
        "div.chain-step",
        h("div.chain-box", { title: `Template #${s.template_id}` }, s.template_name || `Template #${s.template_id}`),
        s.on_failure === "continue" ? h("span.continue-mark", "continue on fail") : null,
        s.run_if === "on_failure" ? h("span.runif-mark", "only after a failure") : null,
        s.run_if === "always" ? h("span.runif-mark", "always runs") : null,
      ),
      i < steps.length - 1 ? ARROW() : null,
    ]),
  );
}

/** A run's progress: one coloured dot per step, with the step's name. */
export function runSteps(steps) {
  return h(
    "div.run-steps",
    steps.map((s, i) => [
      h(
        "span.run-step",
        { "data-step": s.step_index, "data-status": s.status },
        dot(s.status, `${s.template_name}: ${s.status}`, s.step_index),
        h("span.run-step-name", s.template_name),
      ),
      i < steps.length - 1 ? ARROW() : null,
    ]),
  );
}

/** A button that disables itself while its request is in flight (no double submits). */
export function actionButton(label, cls, run, { title } = {}) {
  const btn = h(`button.btn.${cls}`, { type: "button", title }, label);
  btn.addEventListener("click", async () => {
    if (btn.disabled) return;
    btn.disabled = true;
    btn.classList.add("busy");
    try {
      await run();
    } finally {
      btn.disabled = false;
      btn.classList.remove("busy");
    }
  });
  return btn;
}

export function currentStep(run) {
  return run.steps_snapshot[run.current_step] || null;
}

async function advance(run, success) {
  const where = `run:${run.id}`;
  try {
    const reason = success ? undefined : `Marked failed by ${state.me?.name || "an operator"}`;
    const res = await api.advanceRun(run.id, run.current_step, success, reason);
    setError(where, null);
    putRun(res.run);
  } catch (e) {
    setError(where, e.status === 409 ? `${e.message} The run had already moved on; it now shows its current state.` : e.message);
    if (e.status === 409 || e.status === 404) loadRun(run.id).catch(() => {});
  }
}

async function cancel(run) {
  const where = `run:${run.id}`;
  try {
    const res = await api.cancelRun(run.id);
    setError(where, null);
    putRun(res.run);
  } catch (e) {
    setError(where, e.status === 409 ? `${e.message} It now shows its current state.` : e.message);
    if (e.status === 409 || e.status === 404) loadRun(run.id).catch(() => {});
  }
}

/** Step Done / Step Failed / Cancel for one run, for people allowed to use them. */
export function runControls(run) {
  if (!canOperate()) return null;
  const done = actionButton("Step Done", "btn-success", () => advance(run, true));
  const failed = actionButton("Step Failed", "btn-danger-soft", () => advance(run, false));
  const cancelBtn = actionButton("Cancel", "btn-ghost", () => cancel(run));
  for (const b of [done, failed, cancelBtn]) b.classList.add("btn-sm");
  done.dataset.action = "step-done";
  failed.dataset.action = "step-failed";
  cancelBtn.dataset.action = "cancel";
  return h("div.run-controls", done, failed, cancelBtn);
}

/** The Active Run Banner's card for one pending or running run. */
export function activeRunCard(run) {
  const n = run.steps_snapshot.length;
  const k = Math.min(run.current_step + 1, n);
  const step = currentStep(run);
  return h(
    "article.active-run",
    { dataset: { key: `run-${run.id}`, runId: run.id, status: run.status } },
    h(
      "div.active-run-head",
      h(
        "div.active-run-title",
        h("span.pulse", { "aria-hidden": "true" }),
        h("a.run-link", { href: `#/runs/${run.id}` }, `${run.pipeline_name} — Run #${run.id}`),
      ),
      h(
        "span.muted.small.step-count",
        `Step ${k} / ${n}`,
        step ? ` · ${step.template_name}` : "",
        run.started_at ? ` · ${fmtDuration(run.started_at)}` : " · waiting for a worker",
      ),
    ),
    runSteps(run.steps_snapshot),
    runControls(run),
    inlineError(`run:${run.id}`),
  );
}

/** One row of run history (in a pipeline card or the runs page). */
export function runRow(run, { showPipeline = false } = {}) {
  return h(
    "a.run-row",
    { href: `#/runs/${run.id}`, dataset: { key: `run-${run.id}`, runId: run.id, status: run.status } },
    h("span.run-row-id", `#${run.id}`),
    showPipeline ? h("span.run-row-pipeline", run.pipeline_name) : null,
    badge(run.status),
    h("span.run-row-dots", run.steps_snapshot.map((s) => dot(s.status, `${s.template_name}: ${s.status}`, s.step_index))),
    h("span.muted.small.run-row-when", { title: new Date((run.created_at || 0) * 1000).toLocaleString() }, fmtAgo(run.started_at || run.created_at)),
    h("span.muted.small.run-row-dur", fmtDuration(run.started_at, run.completed_at)),
    h("span.muted.small.run-row-by", run.triggered_by),
  );
}

export function emptyState(title, text, action) {
  return h("div.empty", h("p.empty-title", title), text ? h("p.muted", text) : null, action || null);
}
