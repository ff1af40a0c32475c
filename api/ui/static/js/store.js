// Client state and its live feed. Views read `state` and re-render on `subscribe`;
// the event stream tells us which runs changed, and we re-read just those.

import { api, getKey } from "./api.js";

export const ACTIVE = new Set(["pending", "running"]);
export const PAGE_SIZE = 50;

export const state = {
  me: null,
  templates: [], // the page of templates on show
  pipelines: [], // the page of pipelines on show
  // Which page of each list is on show (0: the newest items), and how many items the
  // server has (null: the server sent no `total`, so the list it sent is the whole list).
  pages: { templates: { page: 0, total: null }, pipelines: { page: 0, total: null } },
  templateIndex: new Map(), // id -> template, every one seen on any page (agent lookups)
  agents: [],
  schedules: [], // every schedule, for the pipeline cards
  runs: new Map(), // id -> run, as lists give it (step outputs may be omitted)
  details: new Map(), // id -> run read on its own (`?id=`), with outputs and inputs
  loaded: false,
  live: "connecting", // connecting | live | offline
  errors: new Map(), // where -> message, shown next to what caused it
  watching: null, // the id of the run whose detail is on show
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
  if (!run.output_omitted) state.details.set(run.id, run);
  changed();
  if (!prev && ACTIVE.has(run.status)) learnStepTemplates();
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
    fetchPage("templates"),
    fetchPage("pipelines"),
    api.runs({ limit: 100 }),
    api.runs({ status: "running", limit: 200 }),
    api.runs({ status: "pending", limit: 200 }),
  ]);
  showPage("templates", templates);
  showPage("pipelines", pipelines);
  const fresh = new Map();
  for (const r of [...recent.runs, ...running.runs, ...pending.runs]) fresh.set(r.id, r);
  // Keep runs loaded for an expanded card or a detail page, with their newest state.
  for (const [id, r] of state.runs) if (!fresh.has(id) && !ACTIVE.has(r.status)) fresh.set(id, r);
  state.runs = fresh;
  state.loaded = true;
  changed();
  // A detail page on show may have missed changes while the stream was away.
  if (state.watching) loadRun(state.watching).catch(() => {});
  learnStepTemplates();
  if (!state.agents.length) loadAgents();
  loadSchedules();
}

/** Every schedule (a card shows its pipeline's); an older server without them has none. */
export async function loadSchedules() {
  try {
    state.schedules = (await api.schedules()).schedules || [];
  } catch {
    state.schedules = [];
  }
  changed();
}

export function schedulesOf(pipelineId) {
  return state.schedules.filter((sc) => sc.pipeline_id === pipelineId);
}

// --- paged lists ---------------------------------------------------------------------
// Lists show the newest items first: page 0 holds the newest PAGE_SIZE. The server lists
// in ascending id order, so page p is the window ending p pages before the end, reversed.

function lastPage(total) {
  return Math.max(0, Math.ceil(total / PAGE_SIZE) - 1);
}

// The request for `page` of a list of `total` items. A list of one page or less (or one
// whose size is not known yet) is asked from its start, so the answer gives its `total`.
function windowOf(page, total) {
  if (total <= PAGE_SIZE) return { offset: 0, limit: PAGE_SIZE };
  const end = total - Math.min(page, lastPage(total)) * PAGE_SIZE;
  const offset = Math.max(0, end - PAGE_SIZE);
  return { offset, limit: end - offset };
}

/**
 * Read `page` of `kind`, newest first, in at most two requests: the first uses the total
 * last seen; when the answer's total puts the page elsewhere, the second reads it there.
 */
async function fetchPage(kind, page = state.pages[kind].page) {
  const asked = windowOf(page, state.pages[kind].total ?? 0);
  let data = await api[kind](asked);
  if (typeof data.total === "number") {
    const right = windowOf(page, data.total);
    if (right.offset !== asked.offset || right.limit !== asked.limit) data = await api[kind](right);
  }
  return { data, page };
}

function showPage(kind, { data, page }) {
  // An answer without `total` is the whole list (an older server): newest first too.
  const items = [...(data[kind] || [])].sort((a, b) => b.id - a.id);
  const total = typeof data.total === "number" ? data.total : null;
  state[kind] = items;
  state.pages[kind] = { page: total === null ? 0 : Math.min(page, lastPage(total)), total };
  if (kind === "templates") for (const t of items) state.templateIndex.set(t.id, t);
}

/** Show page `page` of `kind` (0: the newest items); past the end, the last page. */
export async function goToPage(kind, page) {
  showPage(kind, await fetchPage(kind, Math.max(0, page)));
  changed();
}

/**
 * Read templates a thousand at a time, fresh from the server, until `enough(seen ids)`
 * says so or the list ends. A server without `total` answers the whole list at once.
 */
async function readTemplates(enough = () => false) {
  const found = [];
  const seen = new Set();
  for (let offset = 0; ; offset += 1000) {
    const data = await api.templates({ limit: 1000, offset });
    const items = data.templates || [];
    for (const t of items) {
      state.templateIndex.set(t.id, t);
      seen.add(t.id);
    }
    found.push(...items);
    if (enough(seen) || typeof data.total !== "number" || !items.length || found.length >= data.total) break;
  }
  return found;
}

/** Every template (the pipeline form's picker offers them all, not a page). */
export function allTemplates() {
  return readTemplates();
}

/** The current versions of the templates with these ids (those that still exist). */
export async function findTemplates(ids) {
  await readTemplates((seen) => ids.every((id) => seen.has(id)));
  return ids.map((id) => state.templateIndex.get(id)).filter(Boolean);
}

// Which profile a step uses is on its template; active runs' steps are looked up once,
// and ids that no longer exist are not asked for again.
const unknownTemplates = new Set();
let learning = false;
export async function learnStepTemplates() {
  const ids = new Set();
  for (const r of activeRuns()) for (const s of r.steps_snapshot) ids.add(s.template_id);
  const missing = [...ids].filter((id) => !state.templateIndex.has(id) && !unknownTemplates.has(id));
  if (!missing.length || learning) return;
  learning = true;
  try {
    await findTemplates(missing);
    for (const id of missing) if (!state.templateIndex.has(id)) unknownTemplates.add(id);
    changed();
  } catch {
    // The banner then shows the step as a running program; the detail's menu still acts.
  } finally {
    learning = false;
  }
}

export async function loadAgents() {
  try {
    state.agents = (await api.agents()).agents || [];
    changed();
  } catch {
    state.agents = [];
  }
}

export function refreshTemplates() {
  return goToPage("templates", state.pages.templates.page);
}

export function refreshPipelines() {
  loadSchedules();
  return goToPage("pipelines", state.pages.pipelines.page);
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
