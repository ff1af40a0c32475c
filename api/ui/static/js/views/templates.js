// The Templates page: the reusable steps (agent profile, model, prompt, parameters).

import { api } from "../api.js";
import { h, patch, fmtAgo, plural } from "../dom.js";
import { emptyState, inlineError } from "../components.js";
import { confirmAction } from "../confirm.js";
import { pager } from "../pager.js";
import {
  state, canOperate, goToPage, loadAgents, refreshPipelines, refreshTemplates, setError,
} from "../store.js";

export function render(root) {
  const list = h("div.template-list", { id: "template-list" });
  const newBtn = canOperate()
    ? h("button.btn.btn-primary", { type: "button", id: "new-template", onclick: () => openForm(null) }, "New template")
    : null;
  root.replaceChildren(
    h("div.page-head", h("div", h("h1", "Templates"), h("p.muted", "Reusable steps: which agent runs, with what model, prompt and parameters.")), newBtn),
    list,
  );
  const update = () => {
    if (!state.loaded) return patch(list, [h("p.muted", { dataset: { key: "loading" } }, "Loading templates…")]);
    if (!state.templates.length) {
      const empty = emptyState(
        "No templates yet",
        "A template says which agent profile runs a step and what it is asked to do.",
        canOperate() ? h("button.btn.btn-primary", { type: "button", onclick: () => openForm(null) }, "Create a template") : null,
      );
      empty.dataset.key = "empty";
      return patch(list, [empty]);
    }
    patch(list, [...state.templates.map(templateCard), pager("templates", "templates"), pagerError()].filter(Boolean));
  };
  update();
  return update;
}

function agentLabel(name) {
  const a = state.agents.find((x) => x.name === name);
  if (!a) return `${name} (not configured)`;
  return a.name === a.runtime ? a.name : `${a.name} · ${a.runtime}`;
}

function templateCard(t) {
  const ops = canOperate();
  const params = Object.keys(t.parameters || {});
  return h(
    "article.card.template",
    { dataset: { key: `template-${t.id}`, templateId: t.id } },
    h(
      "div.card-head",
      h(
        "div.card-title",
        h("h3", t.name),
        t.description ? h("p.muted.small", t.description) : null,
      ),
      ops
        ? h(
            "div.card-actions",
            h("button.btn.btn-ghost", { type: "button", onclick: () => openForm(t) }, "Edit"),
            h("button.btn.btn-ghost.danger-text", { type: "button", onclick: () => remove(t) }, "Delete"),
          )
        : null,
    ),
    h(
      "dl.facts",
      fact("Agent", agentLabel(t.agent)),
      fact("Model", t.model),
      fact("Timeout", `${t.timeout_seconds} s`),
      t.agent_role ? fact("Role", t.agent_role) : null,
      params.length ? fact("Parameters", params.map((k) => `${k}=${JSON.stringify(t.parameters[k])}`).join(", ")) : null,
    ),
    h("pre.prompt", t.prompt),
    h(
      "div.card-meta.muted.small",
      (t.tags || []).map((tag) => h("span.tag", tag)),
      h("span", `used ${plural(t.use_count || 0, "time")}`),
      h("span", `last used ${fmtAgo(t.last_used_at)}`),
      t.created_by ? h("span", `by ${t.created_by}`) : null,
    ),
    inlineError(`template:${t.id}`),
  );
}

function fact(label, value) {
  return h("div.fact", h("dt", label), h("dd", value));
}

function pagerError() {
  const el = inlineError("pager:templates");
  if (el) el.dataset.key = "pager-error";
  return el;
}

async function remove(t) {
  const answer = await confirmAction({
    title: `Delete “${t.name}”?`,
    message: "The template is deleted for good. Runs that used it keep their copy of it.",
    confirmLabel: "Delete template",
  });
  if (!answer) return;
  try {
    await api.deleteTemplate(t.id);
    setError(`template:${t.id}`, null);
    state.templateIndex.delete(t.id);
    await refreshTemplates();
  } catch (e) {
    const msg = e.status === 409 ? `Cannot delete this template. ${e.message} Remove it from those pipelines first.` : e.message;
    setError(`template:${t.id}`, msg);
  }
}

/** The rules a 422 names (the injection guard), as a list under the form's error. */
function injectionList(rules) {
  return h(
    "ul.injection-rules",
    { id: "tf-injection" },
    rules.map((r) => h("li", { dataset: { rule: r.rule } }, h("code", r.rule), r.description ? ` — ${r.description}` : "")),
  );
}

async function openForm(t) {
  // The profile list arrives after the first page load: wait for it rather than offer
  // a form that lists only "default".
  if (!state.agents.length) await loadAgents();
  const dialog = h("dialog.sheet", { id: "template-form", "aria-labelledby": "template-form-title" });
  const err = h("p.inline-error", { role: "alert", id: "tf-error", hidden: true });
  const field = (label, control, note) =>
    h("label.field", h("span", label, note ? h("em.muted", ` ${note}`) : null), control);

  const name = h("input", { id: "tf-name", required: true, maxlength: 200, value: t?.name || "", autocomplete: "off" });
  const desc = h("textarea", { id: "tf-description", rows: 2, maxlength: 5000 });
  desc.value = t?.description || "";
  const agents = state.agents.length ? state.agents : [{ name: "default", runtime: "" }];
  const current = t?.agent || (agents.find((a) => a.name === "default") ? "default" : agents[0].name);
  const agent = h(
    "select",
    { id: "tf-agent" },
    agents.map((a) => h("option", { value: a.name, selected: a.name === current }, a.runtime ? `${a.name} (${a.runtime})` : a.name)),
    agents.some((a) => a.name === current) ? null : h("option", { value: current, selected: true }, `${current} (not configured)`),
  );
  const model = h("input", { id: "tf-model", maxlength: 100, value: t?.model || "sonnet" });
  const prompt = h("textarea.mono", { id: "tf-prompt", rows: 6, maxlength: 10000, required: true });
  prompt.value = t?.prompt || "";
  const params = h("textarea.mono", { id: "tf-parameters", rows: 3, spellcheck: "false" });
  params.value = JSON.stringify(t?.parameters || {}, null, 0) === "{}" ? "" : JSON.stringify(t.parameters, null, 2);
  params.placeholder = '{"temperature": 0.2, "max_tokens": 4000}';
  const timeout = h("input", { id: "tf-timeout", type: "number", min: 10, max: 3600, value: t?.timeout_seconds ?? 300 });
  const role = h("input", { id: "tf-agent-role", maxlength: 100, value: t?.agent_role || "" });
  const tags = h("input", { id: "tf-tags", value: (t?.tags || []).join(", "), placeholder: "ci, deploy" });
  const save = h("button.btn.btn-primary", { type: "submit", id: "tf-save" }, t ? "Save changes" : "Create template");

  const form = h(
    "form.form",
    { novalidate: true },
    h("h2", { id: "template-form-title" }, t ? `Edit “${t.name}”` : "New template"),
    field("Name", name),
    field("Description", desc, "optional"),
    h("div.field-row", field("Agent profile", agent), field("Model", model)),
    field("Prompt", prompt),
    field("Parameters", params, "JSON object, optional"),
    h("div.field-row", field("Timeout (seconds)", timeout), field("Agent role", role, "optional")),
    field("Tags", tags, "comma separated"),
    err,
    h("div.form-actions", h("button.btn.btn-ghost", { type: "button", onclick: () => dialog.close() }, "Cancel"), save),
  );

  const fail = (msg, el, rules) => {
    err.replaceChildren(msg, rules?.length ? injectionList(rules) : "");
    err.hidden = false;
    el?.focus();
    err.scrollIntoView({ block: "nearest" });
  };

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    err.hidden = true;
    if (!name.value.trim()) return fail("Give the template a name.", name);
    if (!prompt.value.trim()) return fail("Write the prompt the agent is given.", prompt);
    let parameters = {};
    if (params.value.trim()) {
      try {
        parameters = JSON.parse(params.value);
      } catch {
        return fail('Parameters must be valid JSON, for example {"temperature": 0.2}.', params);
      }
      if (!parameters || typeof parameters !== "object" || Array.isArray(parameters))
        return fail("Parameters must be a JSON object ({ … }), not a list or a single value.", params);
    }
    const secs = Number(timeout.value);
    if (!Number.isInteger(secs) || secs < 10 || secs > 3600)
      return fail("Timeout must be a whole number of seconds between 10 and 3600.", timeout);
    const body = {
      name: name.value.trim(),
      description: desc.value.trim() || null,
      agent: agent.value,
      model: model.value.trim() || "sonnet",
      prompt: prompt.value,
      parameters,
      timeout_seconds: secs,
      agent_role: role.value.trim() || null,
      tags: tags.value.split(",").map((s) => s.trim()).filter(Boolean),
    };
    save.disabled = true;
    try {
      if (t) {
        await api.updateTemplate({ id: t.id, ...body });
        // Pipelines show template names, so they change with a rename.
        await Promise.all([refreshTemplates(), refreshPipelines()]);
      } else {
        await api.createTemplate(body);
        await goToPage("templates", 0); // the newest first: the new template is on page 1
      }
      dialog.close();
    } catch (ex) {
      const rules = Array.isArray(ex.body?.injection) ? ex.body.injection : null;
      fail(rules ? `${ex.message} Change the prompt where it matches these rules:` : ex.message, rules ? prompt : null, rules);
    } finally {
      save.disabled = false;
    }
  });

  dialog.append(form);
  dialog.addEventListener("close", () => dialog.remove());
  document.body.append(dialog);
  dialog.showModal();
  name.focus();
}
