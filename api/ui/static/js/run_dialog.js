// The Run dialog: asks for the inputs the pipeline's prompts use, starts the run and
// opens it. Inputs are found in the templates' prompts (`inputs.NAME`, `inputs["NAME"]`,
// `inputs.get("NAME")`); a JSON box takes any object for what the fields cannot say.

import { api } from "./api.js";
import { h } from "./dom.js";
import { findTemplates, putRun } from "./store.js";

const DICT_METHODS = new Set(["get", "items", "keys", "values"]);
const TAGS = /\{\{[\s\S]*?\}\}|\{%[\s\S]*?%\}/g;
const USES = [
  /\binputs\s*\.\s*get\s*\(\s*(["'])(.*?)\1/g,
  /\binputs\s*\[\s*(["'])(.*?)\1\s*\]/g,
  /\binputs\s*\.\s*()([A-Za-z_][A-Za-z0-9_]*)/g,
];

/** The input names one prompt uses, in order of first use (only inside Jinja tags). */
export function inputsOf(prompt) {
  const names = [];
  for (const tag of String(prompt || "").match(TAGS) || []) {
    const found = [];
    for (const re of USES) {
      for (const m of tag.matchAll(re)) if (!(re === USES[2] && DICT_METHODS.has(m[2]))) found.push([m.index, m[2]]);
    }
    for (const [, name] of found.sort((a, b) => a[0] - b[0])) if (name && !names.includes(name)) names.push(name);
  }
  return names;
}

export async function openRunDialog(pipeline) {
  const fields = h("div.input-fields", { id: "rd-fields" }, h("p.muted.small", "Reading the pipeline’s prompts…"));
  const json = h("textarea.mono", { id: "rd-json-text", rows: 6, spellcheck: "false", placeholder: '{"name": "value"}' });
  const jsonBox = h("details.json-inputs", { id: "rd-json" }, h("summary", "Edit the inputs as JSON"), json);
  const error = h("p.inline-error", { role: "alert", id: "rd-error", hidden: true });
  const startBtn = h("button.btn.btn-primary", { type: "submit", id: "rd-start" }, "Start run");
  const dialog = h(
    "dialog.sheet",
    { id: "run-dialog", "aria-labelledby": "run-dialog-title" },
    h(
      "form.form",
      { novalidate: true },
      h("h2", { id: "run-dialog-title" }, `Run “${pipeline.name}”`),
      fields,
      jsonBox,
      error,
      h("div.form-actions", h("button.btn.btn-ghost", { type: "button", onclick: () => dialog.close() }, "Cancel"), startBtn),
    ),
  );
  dialog.addEventListener("close", () => dialog.remove());
  document.body.append(dialog);
  dialog.showModal();

  const fail = (msg, el) => {
    error.textContent = msg;
    error.hidden = false;
    el?.focus();
  };
  const inputEls = () => [...fields.querySelectorAll("[data-input]")];
  const fromFields = () => Object.fromEntries(inputEls().map((el) => [el.dataset.input, el.value]));

  jsonBox.addEventListener("toggle", () => {
    // One source of truth at a time: the JSON while it is open, the fields otherwise.
    for (const el of inputEls()) el.disabled = jsonBox.open;
    if (jsonBox.open) {
      json.value = JSON.stringify(fromFields(), null, 2);
      json.focus();
      return;
    }
    try {
      const parsed = JSON.parse(json.value || "{}");
      for (const el of inputEls()) {
        const v = parsed?.[el.dataset.input];
        el.value = v === undefined ? "" : typeof v === "string" ? v : JSON.stringify(v);
      }
    } catch {
      // Unparsable JSON is dropped with the box; the fields keep what they had.
    }
  });

  dialog.querySelector("form").addEventListener("submit", async (e) => {
    e.preventDefault();
    error.hidden = true;
    let inputs = fromFields();
    if (jsonBox.open) {
      try {
        inputs = JSON.parse(json.value.trim() || "{}");
      } catch {
        return fail('The inputs must be valid JSON, for example {"topic": "release notes"}.', json);
      }
      if (!inputs || typeof inputs !== "object" || Array.isArray(inputs))
        return fail("The inputs must be a JSON object ({ … }), not a list or a single value.", json);
    }
    startBtn.disabled = true;
    try {
      const { run } = await api.startRun(pipeline.id, inputs);
      putRun(run);
      dialog.close();
      location.hash = `#/runs/${run.id}`;
    } catch (ex) {
      fail(ex.message);
      startBtn.disabled = false;
    }
  });

  try {
    const templates = await findTemplates(pipeline.steps.map((s) => s.template_id));
    showFields(fields, pipeline, templates);
  } catch (ex) {
    fields.replaceChildren(h("p.muted.small", `Could not read the prompts (${ex.message}) Give any inputs as JSON below.`));
    jsonBox.open = true;
  }
  (inputEls()[0] || startBtn).focus();
}

function showFields(container, pipeline, templates) {
  const byId = new Map(templates.map((t) => [t.id, t]));
  const uses = new Map(); // input name -> the steps (1-based) whose prompt uses it
  pipeline.steps.forEach((s, i) => {
    for (const name of inputsOf(byId.get(s.template_id)?.prompt)) {
      if (!uses.has(name)) uses.set(name, []);
      uses.get(name).push(i + 1);
    }
  });
  if (!uses.size) {
    container.replaceChildren(h("p.muted", { id: "rd-none" }, "The prompts of this pipeline use no inputs."));
    return;
  }
  container.replaceChildren(
    h("p.muted.small", "Its prompts use these inputs. Each is sent as text; empty fields are sent empty."),
    ...[...uses].map(([name, steps]) =>
      h(
        "label.field",
        h("span", h("code", `inputs.${name}`), h("em.muted", ` step${steps.length > 1 ? "s" : ""} ${steps.join(", ")}`)),
        h("textarea", { rows: 1, "data-input": name, "aria-label": `inputs.${name}` }),
      ),
    ),
  );
}
