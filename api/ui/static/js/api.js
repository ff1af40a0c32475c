// The JSON API client: the signed-in key, requests, and errors in plain words.

const KEY_STORAGE = "orchestrator.apiKey";

export function getKey() {
  return sessionStorage.getItem(KEY_STORAGE) || "";
}

export function setKey(key) {
  if (key) sessionStorage.setItem(KEY_STORAGE, key);
  else sessionStorage.removeItem(KEY_STORAGE);
}

export class ApiError extends Error {
  constructor(status, message, detail, body) {
    super(message);
    this.status = status;
    this.detail = detail;
    this.body = body || null; // the whole JSON answer, for keys beyond `error`
  }
}

// What the person sees for each status; the server's own text is kept when it already
// says what went wrong (400, 404, 409), because it names the field or the state.
function explain(status, detail, what) {
  const doing = what ? ` ${what}` : "";
  switch (status) {
    case 0:
      return `Could not reach the server${doing ? " to" + doing : ""}. Check your connection and try again.`;
    case 400:
      return detail ? humanize(detail) : "Some of the values are not valid.";
    case 401:
      return "Your API key was not accepted. Sign in again with a valid key.";
    case 403:
      return `Your key does not have permission${doing ? " to" + doing : ""}. Ask an admin for an operator key.`;
    case 404:
      return detail ? `${sentence(detail)} It may have been deleted by someone else.` : "It no longer exists; it may have been deleted.";
    case 409:
      return detail ? sentence(detail) : "It changed in the meantime; reload to see its current state.";
    case 422:
      return detail ? sentence(detail) : "The server refused this content.";
    case 413:
      return "That is too large to send. Shorten the prompt or parameters and try again.";
    case 429:
      return "Too many requests right now. Wait a few seconds and try again.";
    case 503:
      return "The service is temporarily unavailable (its database or queue is down). Try again shortly.";
    default:
      return `Something went wrong on the server (error ${status})${detail ? ": " + detail : ""}. Try again.`;
  }
}

const FIELDS = {
  name: "Name",
  description: "Description",
  prompt: "Prompt",
  task_prompt: "Prompt",
  model: "Model",
  parameters: "Parameters",
  timeout_seconds: "Timeout",
  agent: "Agent profile",
  agent_role: "Agent role",
  tags: "Tags",
  steps: "Steps",
  on_failure: "on failure",
  template_id: "template",
  inputs: "Inputs",
};

// Validation errors come as "tags.1: String should have at most 100 characters"; say
// it as "Tags, item 2: should have at most 100 characters."
function humanize(detail) {
  return detail
    .split("; ")
    .map((part) => {
      const m = /^([\w.]+): (.*)$/.exec(part);
      if (!m) return sentence(part);
      const where = m[1].split(".").map((seg, i, all) => {
        if (/^\d+$/.test(seg)) return `${all[i - 1] === "steps" ? "step" : "item"} ${Number(seg) + 1}`;
        return FIELDS[seg] || seg.replace(/_/g, " ");
      });
      let msg = m[2].replace(/^(String|Input|Value) /, "");
      if (/^Field required$/i.test(msg)) msg = "is required";
      return sentence(`${where.join(", ")}: ${msg}`);
    })
    .join(" ");
}

function sentence(text) {
  const t = String(text).trim();
  if (!t) return t;
  const first = t[0].toUpperCase() + t.slice(1);
  return /[.!?]$/.test(first) ? first : first + ".";
}

let onUnauthorized = () => {};
export function whenUnauthorized(fn) {
  onUnauthorized = fn;
}

/**
 * Call the API. `what` is a short phrase ("start this pipeline") used in messages.
 * Resolves with the parsed body; rejects with an ApiError whose message is for people.
 */
export async function request(method, path, { body, what, key } = {}) {
  const headers = { Accept: "application/json", "x-api-key": key ?? getKey() };
  const init = { method, headers, cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch(path, init);
  } catch {
    throw new ApiError(0, explain(0, "", what), "network error");
  }
  let data = null;
  try {
    data = await resp.json();
  } catch {
    data = null;
  }
  if (!resp.ok) {
    const detail = data && typeof data.error === "string" ? data.error : "";
    const err = new ApiError(resp.status, explain(resp.status, detail, what), detail, data);
    if (resp.status === 401 && key === undefined) onUnauthorized(err);
    throw err;
  }
  return data;
}

function query(params) {
  const qs = new URLSearchParams(Object.entries(params).filter(([, v]) => v !== undefined && v !== null && v !== ""));
  const text = qs.toString();
  return text ? `?${text}` : "";
}

export const api = {
  me: (key) => request("GET", "/api/me", { key, what: "sign in" }),
  agents: () => request("GET", "/api/agents", { what: "list agent profiles" }),
  templates: (page = {}) => request("GET", `/api/workflows${query(page)}`, { what: "list templates" }),
  createTemplate: (t) => request("POST", "/api/workflows", { body: t, what: "create this template" }),
  updateTemplate: (t) => request("PUT", "/api/workflows", { body: t, what: "save this template" }),
  deleteTemplate: (id) => request("DELETE", "/api/workflows", { body: { id }, what: "delete this template" }),
  pipelines: (page = {}) => request("GET", `/api/pipelines${query(page)}`, { what: "list pipelines" }),
  createPipeline: (p) => request("POST", "/api/pipelines", { body: p, what: "create this pipeline" }),
  updatePipeline: (p) => request("PUT", "/api/pipelines", { body: p, what: "save this pipeline" }),
  deletePipeline: (id) => request("DELETE", "/api/pipelines", { body: { id }, what: "delete this pipeline" }),
  schedules: () => request("GET", "/api/schedules", { what: "list schedules" }),
  createSchedule: (sc) => request("POST", "/api/schedules", { body: sc, what: "create this schedule" }),
  updateSchedule: (sc) => request("PUT", "/api/schedules", { body: sc, what: "save this schedule" }),
  deleteSchedule: (id) => request("DELETE", "/api/schedules", { body: { id }, what: "delete this schedule" }),
  runs: (q = {}) => request("GET", `/api/pipelines/run${query(q)}`, { what: "list runs" }),
  run: (id) => request("GET", `/api/pipelines/run?id=${encodeURIComponent(id)}`, { what: "load this run" }),
  startRun: (pipelineId, inputs) =>
    request("POST", "/api/pipelines/run", {
      body: { action: "start", pipeline_id: pipelineId, ...(inputs ? { inputs } : {}) },
      what: "start this pipeline",
    }),
  advanceRun: (runId, stepIndex, success, error) =>
    request("POST", "/api/pipelines/run", {
      body: { action: "advance", run_id: runId, step_index: stepIndex, success, ...(error ? { error } : {}) },
      what: success ? "mark this step done" : "mark this step failed",
    }),
  cancelRun: (runId) =>
    request("POST", "/api/pipelines/run", { body: { action: "cancel", run_id: runId }, what: "cancel this run" }),
};
