// The Pipelines page: Active Run Banner, the pipeline cards, and the create/edit form.

import { api } from "../api.js";
import { h, patch, svg, fmtAgo, fmtDateTime, plural } from "../dom.js";
import {
  activeRunCard,
  emptyState,
  inlineError,
  pipelineChain,
  runRow,
} from "../components.js";
import { confirmAction } from "../confirm.js";
import { pager } from "../pager.js";
import { openRunDialog } from "../run_dialog.js";
import {
  state,
  activeRuns,
  allTemplates,
  canOperate,
  changed,
  goToPage,
  loadPipelineRuns,
  loadSchedules,
  refreshPipelines,
  runsOf,
  schedulesOf,
  setError,
} from "../store.js";

const expanded = new Set();

export function render(root) {
  const banner = h("section.banner", { id: "active-runs", "aria-label": "Active runs" });
  const list = h("div.pipeline-list", { id: "pipeline-list" });
  const newBtn = canOperate()
    ? h("button.btn.btn-primary", { type: "button", id: "new-pipeline", onclick: () => openForm(null) }, "New pipeline")
    : null;
  root.replaceChildren(
    banner,
    h("div.page-head", h("div", h("h1", "Pipelines"), h("p.muted", "Chains of workflow templates that run in order.")), newBtn),
    list,
  );
  const update = () => {
    updateBanner(banner);
    updateList(list);
  };
  update();
  return update;
}

function updateBanner(banner) {
  const runs = activeRuns();
  banner.hidden = runs.length === 0;
  const head = h("h2.banner-title", { dataset: { key: "head" } }, h("span.pulse", { "aria-hidden": "true" }), `Active runs`, h("span.count", String(runs.length)));
  patch(banner, [head, ...runs.map(activeRunCard)]);
}

function updateList(list) {
  if (!state.loaded) {
    patch(list, [h("p.muted", { dataset: { key: "loading" } }, "Loading pipelines…")]);
    return;
  }
  if (!state.pipelines.length) {
    const action = canOperate()
      ? h("button.btn.btn-primary", { type: "button", onclick: () => openForm(null) }, "Create a pipeline")
      : null;
    const hint = (state.pages.templates.total ?? state.templates.length) < 2 && canOperate()
      ? "A pipeline needs at least two workflow templates. Create them on the Templates page first."
      : "A pipeline chains workflow templates; each run walks its steps in order.";
    const empty = emptyState("No pipelines yet", hint, action);
    empty.dataset.key = "empty";
    patch(list, [empty]);
    return;
  }
  const pagerError = inlineError("pager:pipelines");
  if (pagerError) pagerError.dataset.key = "pager-error";
  patch(list, [...state.pipelines.map(pipelineCard), pager("pipelines", "pipelines"), pagerError].filter(Boolean));
}

function pipelineCard(p) {
  const open = expanded.has(p.id);
  const stats = p.runs || { total: 0, completed: 0, failed: 0, running: 0 };
  const ops = canOperate();
  return h(
    "article.card.pipeline",
    { dataset: { key: `pipeline-${p.id}`, pipelineId: p.id }, "aria-expanded": String(open) },
    h(
      "div.card-head",
      h(
        "button.expander",
        { type: "button", "aria-label": open ? "Hide run history" : "Show run history", onclick: () => toggle(p.id) },
        svg("0 0 16 16", ["M6 4l4 4-4 4"], open ? "chev open" : "chev"),
      ),
      h(
        "div.card-title",
        h("h3", { onclick: () => toggle(p.id) }, p.name),
        p.description ? h("p.muted.small", p.description) : null,
      ),
      ops
        ? h(
            "div.card-actions",
            h("button.btn.btn-primary", { type: "button", onclick: () => openRunDialog(p) }, "Run"),
            h("button.btn.btn-ghost", { type: "button", onclick: () => openForm(p) }, "Edit"),
            h("button.btn.btn-ghost.danger-text", { type: "button", onclick: () => remove(p) }, "Delete"),
          )
        : null,
    ),
    pipelineChain(p.steps),
    h(
      "div.card-meta.muted.small",
      h("span", plural(p.steps.length, "step")),
      h("span", `${plural(stats.total, "run")}`),
      stats.running ? h("span.meta-running", `${stats.running} active`) : null,
      h("span.meta-ok", `${stats.completed} completed`),
      stats.failed ? h("span.meta-failed", `${stats.failed} failed`) : null,
      h("span", `last run ${fmtAgo(p.last_used_at)}`),
      p.max_concurrent_runs ? h("span.meta-limit", { title: "Concurrency limit" }, `at most ${p.max_concurrent_runs} at once, ${LIMIT_LABELS[p.on_limit] || p.on_limit}`) : null,
    ),
    scheduleLine(p),
    inlineError(`pipeline:${p.id}`),
    open ? history(p) : null,
  );
}

// What a start beyond the concurrency limit does, as the card and the form say it.
const LIMIT_LABELS = { queue: "then queue", skip: "then refuse", cancel_oldest: "then cancel the oldest" };

// The pipeline's schedules: each cron in its zone, and when it fires next.
function scheduleLine(p) {
  const schedules = schedulesOf(p.id);
  if (!schedules.length) return null;
  return h(
    "ul.schedules.muted.small",
    { "aria-label": "Schedules" },
    schedules.map((sc) =>
      h(
        "li.schedule",
        { dataset: { scheduleId: sc.id } },
        h("code", sc.cron),
        ` ${sc.timezone}`,
        sc.name ? ` · ${sc.name}` : "",
        sc.enabled ? ` · next ${fmtDateTime(sc.next_fire_at)}` : " · paused",
        sc.last_fire_status === "skipped" ? " · last fire skipped" : "",
      ),
    ),
  );
}

function history(p) {
  const runs = runsOf(p.id, 10);
  return h(
    "div.history",
    h("h4", "Run history"),
    runs.length ? h("div.run-rows", runs.map((r) => runRow(r))) : h("p.muted.small", "This pipeline has not run yet."),
  );
}

function toggle(id) {
  if (expanded.has(id)) expanded.delete(id);
  else {
    expanded.add(id);
    loadPipelineRuns(id).catch((e) => setError(`pipeline:${id}`, e.message));
  }
  changed();
}

async function remove(p) {
  const answer = await confirmAction({
    title: `Delete “${p.name}”?`,
    message: "The pipeline is deleted for good. Its runs are kept, with its name.",
    confirmLabel: "Delete pipeline",
  });
  if (!answer) return;
  try {
    await api.deletePipeline(p.id);
    setError(`pipeline:${p.id}`, null);
    await refreshPipelines();
  } catch (e) {
    setError(`pipeline:${p.id}`, e.message);
    if (e.status === 404) refreshPipelines().catch(() => {});
  }
}

// --- the create/edit form --------------------------------------------------------------

async function openForm(pipeline) {
  // The picker offers every template, not just the page the Templates list shows.
  let templates;
  try {
    templates = await allTemplates();
  } catch (e) {
    setError(pipeline ? `pipeline:${pipeline.id}` : "pager:pipelines", e.message);
    return;
  }
  const dialog = h("dialog.sheet", { id: "pipeline-form", "aria-labelledby": "pipeline-form-title" });
  const steps = pipeline
    ? pipeline.steps.map((s) => ({
        template_id: s.template_id,
        on_failure: s.on_failure || "stop",
        run_if: s.run_if || "on_success",
        template_name: s.template_name,
      }))
    : [];
  const name = h("input", { id: "pf-name", name: "name", required: true, maxlength: 200, value: pipeline?.name || "", autocomplete: "off" });
  const desc = h("textarea", { id: "pf-description", name: "description", rows: 2, maxlength: 5000 });
  desc.value = pipeline?.description || "";
  const maxRuns = h("input", { id: "pf-max-runs", name: "max_concurrent_runs", type: "number", min: 1, max: 1000, step: 1, placeholder: "no limit", value: pipeline?.max_concurrent_runs ?? "" });
  const onLimit = h(
    "select",
    { id: "pf-on-limit", name: "on_limit" },
    Object.entries(LIMIT_LABELS).map(([value, label]) => h("option", { value, selected: (pipeline?.on_limit || "queue") === value }, label)),
  );
  const stepList = h("ol.step-editor", { id: "pf-steps" });
  // The pipeline's schedules, edited here and saved after the pipeline (each by its own
  // request: a schedule the server refuses is reported on the card, the rest stand).
  const localZone = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
  const scheds = pipeline ? schedulesOf(pipeline.id).map((sc) => ({ ...sc, saved: { ...sc } })) : [];
  const removed = [];
  const schedList = h("ul.schedule-editor", { id: "pf-schedules" });
  const addSched = h("button.btn.btn-ghost", { type: "button", id: "pf-add-schedule" }, "Add schedule");
  const picker = h(
    "select",
    { id: "pf-add-template", "aria-label": "Template to add" },
    h("option", { value: "" }, templates.length ? "Choose a template…" : "No templates yet"),
    templates.map((t) => h("option", { value: t.id }, t.name)),
  );
  const addBtn = h("button.btn.btn-ghost", { type: "button", id: "pf-add-step" }, "Add step");
  const hint = h("p.hint.small", { id: "pf-hint" });
  const save = h("button.btn.btn-primary", { type: "submit", id: "pf-save" }, pipeline ? "Save changes" : "Create pipeline");
  const error = h("p.inline-error", { role: "alert", id: "pf-error", hidden: true });
  const form = h(
    "form.form",
    { method: "dialog", novalidate: true },
    h("h2", { id: "pipeline-form-title" }, pipeline ? `Edit “${pipeline.name}”` : "New pipeline"),
    h("label.field", h("span", "Name"), name),
    h("label.field", h("span", "Description ", h("em.muted", "optional")), desc),
    h("div.field-row", h("label.field", h("span", "Runs at once ", h("em.muted", "optional")), maxRuns), h("label.field", h("span", "Beyond that"), onLimit)),
    h("fieldset.field", h("legend", "Steps"), stepList, h("div.add-step", picker, addBtn), hint),
    h("fieldset.field", h("legend", "Schedules ", h("em.muted", "optional")), schedList, h("div.add-step", addSched)),
    error,
    h(
      "div.form-actions",
      h("button.btn.btn-ghost", { type: "button", onclick: () => dialog.close() }, "Cancel"),
      save,
    ),
  );

  const nameOf = (id) => templates.find((t) => t.id === id)?.name || steps.find((s) => s.template_id === id)?.template_name || `Template #${id}`;

  function redraw() {
    stepList.replaceChildren(
      ...steps.map((s, i) =>
        h(
          "li.step-row",
          { dataset: { index: i } },
          h("span.step-num", String(i + 1)),
          h("span.step-name", nameOf(s.template_id)),
          h(
            "select.step-onfail",
            {
              "aria-label": `On failure of step ${i + 1}`,
              onchange: (e) => {
                s.on_failure = e.target.value;
              },
            },
            h("option", { value: "stop", selected: s.on_failure === "stop" }, "stop on fail"),
            h("option", { value: "continue", selected: s.on_failure === "continue" }, "continue on fail"),
          ),
          h(
            "select.step-runif",
            {
              "aria-label": `When step ${i + 1} runs`,
              title: "When this step runs",
              onchange: (e) => {
                s.run_if = e.target.value;
              },
            },
            h("option", { value: "on_success", selected: s.run_if === "on_success" }, "runs normally"),
            h("option", { value: "on_failure", selected: s.run_if === "on_failure" }, "only after a failure"),
            h("option", { value: "always", selected: s.run_if === "always" }, "always runs"),
          ),
          h(
            "span.step-tools",
            h("button.icon-btn", { type: "button", title: "Move up", "aria-label": `Move step ${i + 1} up`, disabled: i === 0, onclick: () => move(i, -1) }, "↑"),
            h("button.icon-btn", { type: "button", title: "Move down", "aria-label": `Move step ${i + 1} down`, disabled: i === steps.length - 1, onclick: () => move(i, 1) }, "↓"),
            h("button.icon-btn.danger-text", { type: "button", title: "Remove", "aria-label": `Remove step ${i + 1}`, onclick: () => { steps.splice(i, 1); redraw(); } }, "✕"),
          ),
        ),
      ),
    );
    if (!steps.length) stepList.append(h("li.step-empty.muted.small", "No steps yet. Add templates in the order they should run."));
    const ok = steps.length >= 2 && name.value.trim().length > 0;
    save.disabled = !ok;
    hint.textContent =
      steps.length < 2
        ? `A pipeline needs at least 2 steps (${steps.length} so far).`
        : !name.value.trim()
          ? "Give the pipeline a name."
          : `${steps.length} steps. Steps run top to bottom.`;
  }

  function redrawSchedules() {
    schedList.replaceChildren(
      ...scheds.map((sc, i) =>
        h(
          "li.schedule-row",
          { dataset: { index: i } },
          h("input.sched-cron", { "aria-label": `Cron of schedule ${i + 1}`, value: sc.cron, maxlength: 200, placeholder: "m h dom mon dow", oninput: (e) => { sc.cron = e.target.value; } }),
          h("input.sched-zone", { "aria-label": `Time zone of schedule ${i + 1}`, value: sc.timezone, maxlength: 64, oninput: (e) => { sc.timezone = e.target.value; } }),
          h("label.sched-enabled", h("input", { type: "checkbox", checked: sc.enabled, onchange: (e) => { sc.enabled = e.target.checked; } }), " on"),
          h("button.icon-btn.danger-text", { type: "button", title: "Remove", "aria-label": `Remove schedule ${i + 1}`, onclick: () => { if (sc.id) removed.push(sc.id); scheds.splice(i, 1); redrawSchedules(); } }, "✕"),
        ),
      ),
    );
    if (!scheds.length) schedList.append(h("li.step-empty.muted.small", "Runs start only when someone starts them."));
  }

  addSched.addEventListener("click", () => {
    scheds.push({ cron: "0 3 * * *", timezone: localZone, enabled: true });
    redrawSchedules();
  });

  async function saveSchedules(pipelineId) {
    const failures = [];
    const attempt = async (what, work) => {
      try {
        await work();
      } catch (err) {
        failures.push(`${what}: ${err.message}`);
      }
    };
    for (const id of removed) await attempt("a removed schedule", () => api.deleteSchedule(id));
    for (const sc of scheds) {
      const body = { cron: sc.cron.trim(), timezone: sc.timezone.trim(), enabled: sc.enabled };
      if (!sc.id) await attempt(`schedule ${body.cron}`, () => api.createSchedule({ pipeline_id: pipelineId, ...body }));
      else if (body.cron !== sc.saved.cron || body.timezone !== sc.saved.timezone || body.enabled !== sc.saved.enabled)
        await attempt(`schedule ${body.cron}`, () => api.updateSchedule({ id: sc.id, ...body }));
    }
    await loadSchedules();
    setError(`pipeline:${pipelineId}`, failures.length ? `Pipeline saved, but not ${failures.join("; ")}` : null);
  }

  function move(i, d) {
    const [s] = steps.splice(i, 1);
    steps.splice(i + d, 0, s);
    redraw();
  }

  addBtn.addEventListener("click", () => {
    const id = Number(picker.value);
    if (!id) {
      picker.focus();
      return;
    }
    steps.push({ template_id: id, on_failure: "stop", run_if: "on_success" });
    redraw();
  });
  name.addEventListener("input", redraw);

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    if (save.disabled) return;
    save.disabled = true;
    error.hidden = true;
    const body = {
      name: name.value.trim(),
      description: desc.value.trim() || null,
      steps: steps.map(({ template_id, on_failure, run_if }) => ({ template_id, on_failure, run_if })),
      max_concurrent_runs: maxRuns.value === "" ? null : Number(maxRuns.value),
      on_limit: onLimit.value,
    };
    try {
      if (pipeline) {
        await api.updatePipeline({ id: pipeline.id, ...body });
        await saveSchedules(pipeline.id);
        await refreshPipelines();
      } else {
        const created = await api.createPipeline(body);
        await saveSchedules(created.pipeline.id);
        await goToPage("pipelines", 0); // the newest first: the new pipeline is on page 1
      }
      dialog.close();
    } catch (err) {
      error.textContent = err.message;
      error.hidden = false;
      redraw();
    }
  });

  dialog.append(form);
  dialog.addEventListener("close", () => dialog.remove());
  document.body.append(dialog);
  redraw();
  redrawSchedules();
  dialog.showModal();
  name.focus();
}
