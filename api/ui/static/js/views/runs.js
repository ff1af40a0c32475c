// The Runs page (recent runs of every pipeline) and one run's detail.

import { h, patch, fmtTime, fmtDuration } from "../dom.js";
import { badge, dot, emptyState, inlineError, runControls, runRow } from "../components.js";
import { state, ACTIVE, changed, loadRun, recentRuns } from "../store.js";

const STATUSES = ["", "running", "pending", "completed", "failed", "cancelled"];
let filter = "";
const openOutputs = new Map(); // "run:step" -> open, as the person left it

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
  root.replaceChildren(h("p.crumbs.small", h("a", { href: "#/runs" }, "Runs"), " / ", `Run #${id}`), body);
  let missing = null;
  loadRun(id).catch((e) => {
    missing = e.message;
    changed();
  });
  let reloading = false;
  const update = () => {
    const run = state.runs.get(id);
    if (!run) {
      body.replaceChildren(missing ? h("p.inline-error", { role: "alert" }, missing) : h("p.muted", "Loading run…"));
      return;
    }
    if (run.output_omitted && !reloading) {
      // A run list replaced the whole run with its short form (no outputs): read it again.
      reloading = true;
      loadRun(id).catch(() => {}).finally(() => { reloading = false; });
    }
    patch(body, [header(run), stepsTable(run)]);
  };
  update();
  // Durations of running steps keep counting.
  const tick = setInterval(() => {
    const run = state.runs.get(id);
    if (run && ACTIVE.has(run.status)) update();
  }, 1000);
  update.dispose = () => clearInterval(tick);
  return update;
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
      badge(run.status),
    ),
    h(
      "dl.facts",
      fact("Progress", ACTIVE.has(run.status) ? `Step ${Math.min(run.current_step + 1, n)} / ${n}` : `${doneCount} of ${n} steps completed`),
      fact("Created", fmtTime(run.created_at)),
      fact("Started", fmtTime(run.started_at)),
      fact("Finished", fmtTime(run.completed_at)),
      fact("Duration", fmtDuration(run.started_at, run.completed_at)),
      fact("Pipeline", h("a", { href: "#/pipelines" }, `#${run.pipeline_id}`)),
    ),
    ACTIVE.has(run.status) ? runControls(run) : null,
    inlineError(`run:${run.id}`),
  );
}

function fact(label, value) {
  return h("div.fact", h("dt", label), h("dd", value));
}

function stepsTable(run) {
  return h(
    "section.card.flush.steps",
    { dataset: { key: `steps` } },
    h("h2.pad", "Steps"),
    h(
      "ol.step-list",
      run.steps_snapshot.map((s) =>
        h(
          "li.step-item",
          { dataset: { step: s.step_index, status: s.status }, class: s.step_index === run.current_step && ACTIVE.has(run.status) ? "current" : "" },
          h(
            "div.step-line",
            dot(s.status),
            h("span.step-title", `${s.step_index + 1}. ${s.template_name}`),
            badge(s.status),
            s.on_failure === "continue" ? h("span.continue-mark", "continue on fail") : null,
            (s.attempt || 1) > 1 ? h("span.muted.small", `attempt ${s.attempt}`) : null,
          ),
          h(
            "dl.facts.compact",
            fact("Spawn id", s.spawn_id ? h("code", s.spawn_id) : "—"),
            fact("Started", fmtTime(s.started_at)),
            fact("Finished", fmtTime(s.completed_at)),
            fact("Duration", fmtDuration(s.started_at, s.completed_at)),
          ),
          s.error ? h("p.step-error", h("strong", "Error: "), s.error) : null,
          s.output
            ? h(
                "details.output",
                {
                  open: openOutputs.get(`${run.id}:${s.step_index}`) ?? s.output.length < 400,
                  ontoggle: (e) => openOutputs.set(`${run.id}:${s.step_index}`, e.target.open),
                },
                h("summary", "Output"),
                h("pre", s.output),
              )
            : null,
        ),
      ),
    ),
  );
}

