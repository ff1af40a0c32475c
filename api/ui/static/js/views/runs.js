// The Runs page (recent runs of every pipeline) and one run's detail.

import { h, patch, fmtDateTime, fmtDuration } from "../dom.js";
import { advance, badge, dot, emptyState, inlineError, runBadge, runControls, runRow, stepBadge } from "../components.js";
import { waitsForPerson } from "../people.js";
import { registerStepAction, stepActions } from "../step_actions.js";
import { state, ACTIVE, canOperate, changed, loadRun, recentRuns } from "../store.js";
import { rerunButton } from "../rerun.js";

const STATUSES = ["", "running", "pending", "completed", "failed", "cancelled"];
let filter = "";
const openOutputs = new Map(); // "run:step" -> open, as the person left it
const openMenus = new Set(); // "run:step" whose override menu the person opened

export function renderList(root) {
  const list = h("div.run-rows", { id: "run-list" });
  const select = h(
    "select",
    { id: "run-filter", "aria-label": "Filter by status", onchange: (e) => { filter = e.target.value; changed(); } },
    STATUSES.map((s) => h("option", { value: s, selected: s === filter }, s || "All statuses")),
  );
  root.replaceChildren(
    h("div.page-head", h("div", h("h1", "Runs"), h("p.muted", "The most recent runs of every pipeline, newest first.")), select),
    h("div.card.flush", list),
  );
  const update = () => {
    const runs = recentRuns(100).filter((r) => !filter || r.status === filter);
    if (!state.loaded) return patch(list, [h("p.muted.pad", { dataset: { key: "loading" } }, "Loading runs…")]);
    if (!runs.length) {
      const e = emptyState(filter ? `No ${filter} runs` : "No runs yet", "Start a pipeline from the Pipelines page.");
      e.dataset.key = "empty";
      return patch(list, [e]);
    }
    patch(list, runs.map((r) => runRow(r, { showPipeline: true })));
  };
  update();
  return update;
}

export function renderDetail(root, id) {
  const body = h("div", { id: "run-detail" });
  const headSlot = h("div.slot");
  const inputsSlot = h("div.slot");
  const list = h("ol.step-list");
  const layout = [headSlot, inputsSlot, h("section.card.flush.steps", h("h2.pad", "Steps"), list)];
  const crumb = h("span", `Run #${id}`);
  root.replaceChildren(h("p.crumbs.small", h("a", { href: "#/runs" }, "Runs"), " / ", crumb), body);
  state.watching = id;
  let missing = null;
  loadRun(id).catch((e) => {
    missing = e.message;
    changed();
  });
  const update = () => {
    // Lists carry runs without outputs and inputs; this page shows the run read alone.
    const run = state.details.get(id) || state.runs.get(id);
    if (!run) {
      body.replaceChildren(missing ? h("p.inline-error", { role: "alert" }, missing) : h("p.muted", "Loading run…"));
      return;
    }
    if (body.firstChild !== headSlot) body.replaceChildren(...layout);
    crumb.textContent = `${run.pipeline_name} — Run #${run.id}`;
    patch(headSlot, [header(run)]);
    patch(inputsSlot, [inputsCard(run)]);
    patch(list, run.steps_snapshot.map((s) => stepItem(run, s)));
  };
  update();
  // Running times keep counting in place, without re-rendering what people click on.
  const tick = setInterval(() => {
    for (const el of body.querySelectorAll("[data-since]")) el.textContent = fmtDuration(Number(el.dataset.since));
  }, 1000);
  update.dispose = () => {
    clearInterval(tick);
    if (state.watching === id) state.watching = null;
  };
  return update;
}

/** A duration; one still running counts up (see the tick in renderDetail). */
function duration(start, end, ms) {
  if (start && !end && ms == null) return h("span", { "data-since": start }, fmtDuration(start));
  return fmtDuration(start, end, ms);
}

function header(run) {
  const n = run.steps_snapshot.length;
  const doneCount = run.steps_snapshot.filter((s) => s.status === "completed").length;
  return h(
    "section.card.run-head",
    { dataset: { key: "head", status: run.status } },
    h(
      "div.card-head",
      h("div.card-title", h("h1", `${run.pipeline_name} — Run #${run.id}`), h("p.muted.small", `Triggered by ${run.triggered_by}`)),
      runBadge(run),
    ),
    h(
      "dl.facts",
      fact("Pipeline", h("a.pipeline-link", { href: "#/pipelines", title: `Pipeline #${run.pipeline_id}` }, run.pipeline_name)),
      fact("Progress", run.queued ? "Queued: starts when the pipeline has a free slot" : ACTIVE.has(run.status) ? `Step ${Math.min(run.current_step + 1, n)} / ${n}` : `${doneCount} of ${n} steps completed`),
      fact("Created", fmtDateTime(run.created_at)),
      fact("Started", fmtDateTime(run.started_at)),
      fact("Finished", fmtDateTime(run.completed_at)),
      fact("Duration", duration(run.started_at, run.completed_at, run.duration_ms)),
      run.usage ? h("div.fact.run-usage", h("dt", "Usage"), h("dd", usageText(run.usage))) : null,
      run.rerun_of ? fact("Rerun of", h("a.rerun-of", { href: `#/runs/${run.rerun_of}` }, `Run #${run.rerun_of}`)) : null,
    ),
    ACTIVE.has(run.status) ? runControls(run) : null,
    inlineError(`run:${run.id}`),
  );
}

function inputsCard(run) {
  const entries = Object.entries(run.inputs || {});
  let content;
  if (run.output_omitted) content = h("p.muted.small", "Loading inputs…");
  else if (!entries.length) content = h("p.muted.small", "This run was started with no inputs.");
  else
    content = h(
      "dl.inputs",
      entries.map(([k, v]) => h("div.input", { dataset: { input: k } }, h("dt", h("code", `inputs.${k}`)), h("dd", h("pre", typeof v === "string" ? v : JSON.stringify(v, null, 2))))),
    );
  return h("section.card.run-inputs", { id: "run-inputs", dataset: { key: "inputs" } }, h("h2", "Inputs"), content);
}

// Tokens in and out, and the cost when a price was known: "1,210 in · 305 out · $0.0210".
function usageText(u) {
  const parts = [`${(u.input_tokens || 0).toLocaleString()} in`, `${(u.output_tokens || 0).toLocaleString()} out`];
  if (u.cost_usd !== null && u.cost_usd !== undefined) parts.push(`$${u.cost_usd.toFixed(4)}`);
  return parts.join(" · ");
}

function fact(label, value) {
  return h("div.fact", h("dt", label), h("dd", value));
}

function stepItem(run, s) {
  const key = `${run.id}:${s.step_index}`;
  const current = s.step_index === run.current_step && ACTIVE.has(run.status);
  return h(
    "li.step-item",
    {
      dataset: { key: `step-${s.step_index}`, step: s.step_index, status: s.status, waiting: waitsForPerson(run, s) ? "true" : undefined },
      class: current ? "current" : "",
    },
    h(
      "div.step-line",
      dot(s.status, s.status, undefined, waitsForPerson(run, s)),
      h("span.step-title", `${s.step_index + 1}. ${s.template_name}`),
      stepBadge(run, s),
      s.on_failure === "continue" ? h("span.continue-mark", "continue on fail") : null,
      s.run_if === "always" ? h("span.runif-mark.always-mark", "always runs") : null,
      s.run_if === "on_failure" ? h("span.runif-mark", "only after a failure") : null,
      s.reused ? h("span.reused-mark", { title: "Carried over as it ended; nothing was run again" }, run.rerun_of ? `reused from run #${run.rerun_of}` : "reused") : null,
      s.injection?.length ? h("span.injection-mark", { title: s.injection.map((f) => f.rule).join(", ") }, "⚠ injection warning") : null,
      (s.attempt || 1) > 1 ? h("span.muted.small", `attempt ${s.attempt}`) : null,
      h("div.step-actions", { "data-slot": "step-actions" }, stepActions(run, s)),
    ),
    h(
      "dl.facts.compact",
      fact("Spawn id", s.spawn_id ? h("code", s.spawn_id) : "—"),
      fact("Started", fmtDateTime(s.started_at)),
      fact("Finished", fmtDateTime(s.completed_at)),
      fact("Duration", s.status === "running" || s.completed_at ? duration(s.started_at, s.completed_at, s.duration_ms) : "—"),
      s.usage ? h("div.fact.step-usage", h("dt", "Usage"), h("dd", usageText(s.usage))) : null,
    ),
    s.error ? h("p.step-error", h("strong", "Error: "), s.error) : null,
    attemptsList(s),
    s.injection?.length ? injectionList(s.injection) : null,
    s.output
      ? h(
          "details.output",
          {
            open: openOutputs.get(key) ?? s.output.length < 400,
            ontoggle: (e) => openOutputs.set(key, e.target.open),
          },
          h("summary", "Output"),
          h("pre", s.output),
        )
      : null,
  );
}

/** The attempts before the last, each with how it ended (`attempts` in `GET ?id=`). */
function attemptsList(s) {
  if (!Array.isArray(s.attempts) || !s.attempts.length) return null;
  return h(
    "div.attempts",
    h("h4", `Earlier attempts (${s.attempts.length})`),
    h(
      "ol.attempt-list",
      s.attempts.map((a, i) =>
        h(
          "li.attempt",
          { dataset: { attempt: a.attempt ?? i + 1, status: a.status || "" } },
          h("span.attempt-num", `Attempt ${a.attempt ?? i + 1}`),
          a.status ? badge(a.status) : null,
          h("span.muted.small", fmtDuration(a.started_at, a.completed_at, a.duration_ms)),
          a.started_at ? h("span.muted.small", fmtDateTime(a.started_at)) : null,
          a.error ? h("span.attempt-error", a.error) : null,
        ),
      ),
    ),
  );
}

function injectionList(findings) {
  return h(
    "div.injection",
    h("h4", "Injection warning: what flowed into the prompt matched"),
    h(
      "ul.injection-rules",
      findings.map((f) =>
        h("li", { dataset: { rule: f.rule } }, h("code", f.rule), f.description ? ` — ${f.description}` : "", f.source ? h("span.muted.small", ` in ${f.source}`) : ""),
      ),
    ),
  );
}

// A running program's step can still be resolved by an operator, from a menu kept out of
// the way so that it is a deliberate choice; a person's step has its buttons in the header.
registerStepAction((run, s) => {
  if (!canOperate() || run.status !== "running" || s.status !== "running" || s.step_index !== run.current_step) return null;
  if (waitsForPerson(run, s)) return null;
  const key = `${run.id}:${s.step_index}`;
  return h(
    "details.step-menu",
    { open: openMenus.has(key), ontoggle: (e) => (e.target.open ? openMenus.add(key) : openMenus.delete(key)) },
    h("summary.btn.btn-ghost.btn-sm", { "data-action": "override" }, "Override…"),
    h(
      "div.menu",
      h("button.btn.btn-ghost.btn-sm", { type: "button", "data-action": "override-done", onclick: () => advance(run, s.step_index, true, { override: true }) }, "Mark done"),
      h("button.btn.btn-ghost.btn-sm.danger-text", { type: "button", "data-action": "override-failed", onclick: () => advance(run, s.step_index, false, { override: true }) }, "Mark failed"),
    ),
  );
});

// "Rerun from here" on each step of a failed or cancelled run.
registerStepAction(rerunButton);
