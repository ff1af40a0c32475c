// Client state and its live feed. Views read `state` and re-render on `subscribe`;
// the event stream tells us which runs changed, and we re-read just those.

import { api, getKey } from "./api.js";

export const ACTIVE = new Set(["pending", "running"]);

export const state = {
  me: null,
  templates: [],
  pipelines: [],
  agents: [],
  runs: new Map(), // id -> run
  loaded: false,
  live: "connecting", // connecting | live | offline
  errors: new Map(), // where -> message, shown next to what caused it
};

const listeners = new Set();
let scheduled = false;

export function subscribe(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

export function changed() {
  if (scheduled) return;
  scheduled = true;
  queueMicrotask(() => {
    scheduled = false;
    for (const fn of listeners) fn();
  });
}

export function setError(where, message) {
  if (message) state.errors.set(where, message);
  else state.errors.delete(where);
  changed();
}

export function canOperate() {
  return state.me && (state.me.role === "operator" || state.me.role === "admin");
}

export function putRun(run) {
  if (!run) return;
  const prev = state.runs.get(run.id);
  state.runs.set(run.id, run);
  changed();
  // A run that just started or finished changes its pipeline's counters.
  if (!prev || prev.status !== run.status) schedulePipelinesRefresh();
}

export function runsOf(pipelineId, limit = 10) {
  return [...state.runs.values()]
    .filter((r) => r.pipeline_id === pipelineId)
    .sort((a, b) => b.id - a.id)
    .slice(0, limit);
}

export function activeRuns() {
  return [...state.runs.values()].filter((r) => ACTIVE.has(r.status)).sort((a, b) => a.id - b.id);
}

export function recentRuns(limit = 100) {
  return [...state.runs.values()].sort((a, b) => b.id - a.id).slice(0, limit);
}

export async function loadAll() {
  const [templates, pipelines, recent, running, pending] = await Promise.all([
    api.templates(),
    api.pipelines(),
    api.runs({ limit: 100 }),
    api.runs({ status: "running", limit: 200 }),
    api.runs({ status: "pending", limit: 200 }),
  ]);
  state.templates = templates.templates || [];
  state.pipelines = pipelines.pipelines || [];
  const fresh = new Map();
  for (const r of [...recent.runs, ...running.runs, ...pending.runs]) fresh.set(r.id, r);
  // Keep runs loaded for an expanded card or a detail page, with their newest state.
  for (const [id, r] of state.runs) if (!fresh.has(id) && !ACTIVE.has(r.status)) fresh.set(id, r);
  state.runs = fresh;
  state.loaded = true;
  changed();
  if (!state.agents.length) loadAgents();
}

export async function loadAgents() {
  try {
    state.agents = (await api.agents()).agents || [];
    changed();
  } catch {
    state.agents = [];
  }
}

export async function refreshTemplates() {
  state.templates = (await api.templates()).templates || [];
  changed();
}

export async function refreshPipelines() {
  state.pipelines = (await api.pipelines()).pipelines || [];
  changed();
}

export async function loadPipelineRuns(pipelineId) {
  const { runs } = await api.runs({ pipeline_id: pipelineId, limit: 20 });
  for (const r of runs) state.runs.set(r.id, r);
  changed();
}

export async function loadRun(id) {
  const { run } = await api.run(id);
  putRun(run);
  return run;
}

let pipelinesTimer = null;
function schedulePipelinesRefresh() {
  clearTimeout(pipelinesTimer);
  pipelinesTimer = setTimeout(() => refreshPipelines().catch(() => {}), 250);
}

// --- the live feed -------------------------------------------------------------------

let source = null;
const dirtyRuns = new Set();
let flushTimer = null;

function runChanged(runId) {
  dirtyRuns.add(runId);
  if (flushTimer) return;
  // Events for one run come in bursts (step done, next step running): read it once.
  flushTimer = setTimeout(async () => {
    flushTimer = null;
    const ids = [...dirtyRuns];
    dirtyRuns.clear();
    await Promise.all(ids.map((id) => loadRun(id).catch(() => {})));
  }, 30);
}

export function connectLive() {
  disconnectLive();
  const url = `/api/events?key=${encodeURIComponent(getKey())}`;
  source = new EventSource(url);
  state.live = "connecting";
  changed();
  source.addEventListener("ready", () => {
    // A fresh stream (not a resume): re-read everything so nothing between the first
    // load and this moment is missed.
    state.live = "live";
    loadAll().catch(() => {});
  });
  source.onopen = () => {
    state.live = "live";
    changed();
  };
  source.onmessage = (msg) => {
    let ev;
    try {
      ev = JSON.parse(msg.data);
    } catch {
      return;
    }
    if (ev.run_id != null) runChanged(ev.run_id);
  };
  source.onerror = () => {
    // The browser reconnects by itself, sending Last-Event-ID, and the server replays.
    state.live = source && source.readyState === EventSource.CLOSED ? "offline" : "connecting";
    changed();
    if (source && source.readyState === EventSource.CLOSED) setTimeout(() => source === null || connectLive(), 3000);
  };
}

export function disconnectLive() {
  if (source) source.close();
  source = null;
}
