// Pieces shared by the views: status dots, the step chain, run cards, inline errors.

import { api } from "./api.js";
import { confirmAction } from "./confirm.js";
import { h, svg, fmtAgo, fmtDuration } from "./dom.js";
import { statusLabel, waitsForPerson } from "./people.js";
import { state, canOperate, putRun, setError, loadRun } from "./store.js";

const ARROW = () => svg("0 0 20 12", ["M0 6h16", "M13 2l4 4-4 4"], "arrow");

export function dot(status, label, step, waiting = false) {
  return h("span.dot", {
    "data-status": status,
    "data-step": step,
    "data-waiting": waiting ? "true" : undefined,
    role: "img",
    "aria-label": label || status,
    title: label || status,
  });
}

export function badge(status, label = status) {
  return h("span.badge", { "data-status": status }, label);
}

/** A run's badge: "queued" while it waits for a slot under its pipeline's limit. */
export function runBadge(run) {
  return run.queued ? h("span.badge", { "data-status": "queued", title: "Waiting for a free slot under the pipeline's concurrency limit" }, "queued") : badge(run.status);
}

/** A step's badge: "waiting for you" (its own colour) for a step a person resolves. */
export function stepBadge(run, step) {
  const waiting = waitsForPerson(run, step);
  return h("span.badge", { "data-status": waiting ? "waiting" : step.status }, statusLabel(run, step));
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
export function runSteps(run) {
  const steps = run.steps_snapshot;
  return h(
    "div.run-steps",
    steps.map((s, i) => [
      h(
        "span.run-step",
        { "data-step": s.step_index, "data-status": s.status },
        dot(s.status, `${s.template_name}: ${statusLabel(run, s)}`, s.step_index, waitsForPerson(run, s)),
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

function runError(run, e, when409) {
  setError(`run:${run.id}`, e.status === 409 ? `${e.message} ${when409}` : e.message);
  if (e.status === 409 || e.status === 404) loadRun(run.id).catch(() => {});
}

/**
 * Resolve step `index` of `run` as done or failed. Failing asks first (with an optional
 * reason, kept as the step's error); so does overriding a running program.
 */
export async function advance(run, index, success, { override = false } = {}) {
  const step = run.steps_snapshot[index];
  const who = state.me?.name || "an operator";
  let reason = "";
  if (!success || override) {
    const answer = await confirmAction({
      title: success ? `Mark step ${index + 1} done?` : `Mark step ${index + 1} failed?`,
      message: override
        ? `“${step.template_name}” is a running program. Its own result will be ignored, and the run moves on as if the step had ${success ? "succeeded" : "failed"}.`
        : `“${step.template_name}” will fail${step.on_failure === "continue" ? "; the run continues with the next step." : " and the run stops."}`,
      confirmLabel: success ? "Mark done" : "Mark failed",
      reason: success ? null : { label: "Reason", placeholder: `Marked failed by ${who}` },
    });
    if (!answer) return;
    reason = answer.reason;
  }
  try {
    const error = success ? undefined : reason || `Marked failed by ${who}`;
    const res = await api.advanceRun(run.id, index, success, error);
    setError(`run:${run.id}`, null);
    putRun(res.run);
  } catch (e) {
    runError(run, e, "The run had already moved on; it now shows its current state.");
  }
}

async function cancel(run) {
  const answer = await confirmAction({
    title: `Cancel run #${run.id}?`,
    message: `“${run.pipeline_name}” stops now: the running step's session is terminated and the steps not yet run are skipped.`,
    confirmLabel: "Cancel run",
    keepLabel: "Keep running",
  });
  if (!answer) return;
  try {
    const res = await api.cancelRun(run.id);
    setError(`run:${run.id}`, null);
    putRun(res.run);
  } catch (e) {
    runError(run, e, "It now shows its current state.");
  }
}

/**
 * The run's controls for people allowed to use them: Step Done / Step Failed only while
 * the current step waits for a person, and Cancel while the run is active.
 */
export function runControls(run) {
  if (!canOperate()) return null;
  const step = currentStep(run);
  const buttons = [];
  if (waitsForPerson(run, step)) {
    const done = actionButton("Step Done", "btn-success", () => advance(run, step.step_index, true));
    const failed = actionButton("Step Failed", "btn-danger-soft", () => advance(run, step.step_index, false));
    done.dataset.action = "step-done";
    failed.dataset.action = "step-failed";
    buttons.push(done, failed);
  }
  const cancelBtn = actionButton("Cancel", "btn-ghost", () => cancel(run));
  cancelBtn.dataset.action = "cancel";
  buttons.push(cancelBtn);
  for (const b of buttons) b.classList.add("btn-sm");
  return h("div.run-controls", buttons);
}

/** The Active Run Banner's card for one pending or running run. */
export function activeRunCard(run) {
  const n = run.steps_snapshot.length;
  const k = Math.min(run.current_step + 1, n);
  const step = currentStep(run);
  const waiting = waitsForPerson(run, step);
  return h(
    "article.active-run",
    { dataset: { key: `run-${run.id}`, runId: run.id, status: run.status, waiting: waiting ? "true" : undefined } },
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
      waiting ? h("span.waiting-mark", "waiting for you") : null,
    ),
    runSteps(run),
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
    runBadge(run),
    h("span.run-row-dots", run.steps_snapshot.map((s) => dot(s.status, `${s.template_name}: ${s.status}`, s.step_index))),
    h("span.muted.small.run-row-when", { title: new Date((run.created_at || 0) * 1000).toLocaleString() }, fmtAgo(run.started_at || run.created_at)),
    h("span.muted.small.run-row-dur", fmtDuration(run.started_at, run.completed_at, run.duration_ms)),
    h("span.muted.small.run-row-by", run.triggered_by),
  );
}

export function emptyState(title, text, action) {
  return h("div.empty", h("p.empty-title", title), text ? h("p.muted", text) : null, action || null);
}
