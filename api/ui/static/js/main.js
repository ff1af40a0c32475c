// Boot: sign-in, the hash router, the top bar and the live feed.

import { api, getKey, setKey, whenUnauthorized } from "./api.js";
import { h } from "./dom.js";
import { state, subscribe, connectLive, disconnectLive, loadAll, refreshPipelines, refreshTemplates } from "./store.js";
import * as pipelines from "./views/pipelines.js";
import * as templates from "./views/templates.js";
import * as runs from "./views/runs.js";

const app = document.getElementById("app");
const topbar = document.getElementById("topbar");
let update = null; // the current view's re-render function

subscribe(() => {
  renderLive();
  if (state.loaded) document.querySelector(".page-error")?.remove();
  if (update) update();
});

function route() {
  if (!state.me) return;
  if (update && update.dispose) update.dispose();
  const hash = location.hash.replace(/^#\/?/, "");
  const [page, arg] = hash.split("/");
  let name = page || "pipelines";
  if (name === "runs" && arg) {
    const id = Number(arg);
    update = Number.isInteger(id) && id > 0 ? runs.renderDetail(app, id) : notFound();
  } else if (name === "runs") update = runs.renderList(app);
  else if (name === "templates") update = templates.render(app);
  else if (name === "pipelines") update = pipelines.render(app);
  else {
    update = notFound();
    name = "";
  }
  for (const a of document.querySelectorAll("[data-nav]")) {
    if (a.dataset.nav === name) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  window.scrollTo(0, 0);
}

function notFound() {
  app.replaceChildren(h("div.empty", h("p.empty-title", "Nothing here"), h("p.muted", h("a", { href: "#/pipelines" }, "Back to pipelines"))));
  return null;
}

function renderLive() {
  const el = document.getElementById("live");
  el.dataset.state = state.live;
  el.querySelector(".live-label").textContent = { live: "Live", connecting: "Connecting…", offline: "Offline" }[state.live];
  el.title = state.live === "live" ? "Changes appear as they happen" : "Reconnecting to live updates";
}

function showSignIn(message) {
  topbar.hidden = true;
  update = null;
  const key = h("input", { id: "signin-key", type: "password", autocomplete: "off", required: true, placeholder: "po_…", "aria-describedby": "signin-help" });
  const error = h("p.inline-error", { role: "alert", id: "signin-error", hidden: !message }, message || "");
  const submit = h("button.btn.btn-primary.btn-block", { type: "submit", id: "signin-submit" }, "Sign in");
  const form = h(
    "form.signin.card",
    { novalidate: true },
    h("div.signin-brand", document.querySelector(".brand-mark").cloneNode(true), h("span", "Pipeline Orchestrator")),
    h("h1", "Sign in"),
    h("label.field", h("span", "API key"), key),
    h("p.muted.small", { id: "signin-help" }, "Your key stays in this browser tab only and is forgotten when you close it. Ask an admin for one (orchestrator keys create)."),
    error,
    submit,
  );
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const value = key.value.trim();
    if (!value) {
      error.textContent = "Enter your API key.";
      error.hidden = false;
      return key.focus();
    }
    submit.disabled = true;
    try {
      const me = await api.me(value);
      setKey(value);
      start(me);
    } catch (err) {
      error.textContent = err.status === 401 ? "That key was not recognised. Check it and try again." : err.message;
      error.hidden = false;
      submit.disabled = false;
      key.select();
    }
  });
  app.replaceChildren(h("div.signin-wrap", form));
  key.focus();
}

function start(me) {
  state.me = me;
  topbar.hidden = false;
  document.getElementById("whoami").replaceChildren(h("span.user-name", me.name), h("span.role", { "data-role": me.role }, me.role));
  document.body.dataset.role = me.role;
  route();
  loadAll().catch((e) => showLoadError(e));
  connectLive();
}

function showLoadError(e) {
  app.prepend(h("p.inline-error.page-error", { role: "alert" }, `Could not load the data: ${e.message}`));
}

function signOut(message) {
  setKey("");
  disconnectLive();
  state.me = null;
  state.loaded = false;
  state.runs.clear();
  delete document.body.dataset.role;
  showSignIn(message);
}

whenUnauthorized(() => {
  if (state.me) signOut("Your API key is no longer accepted. Sign in again.");
});

document.getElementById("sign-out").addEventListener("click", () => signOut());
window.addEventListener("hashchange", route);
// Templates and pipelines edited by someone else are not in the event stream; re-read
// them when the person comes back to the tab.
window.addEventListener("focus", () => {
  if (!state.me) return;
  refreshPipelines().catch(() => {});
  refreshTemplates().catch(() => {});
});

async function boot() {
  const key = getKey();
  if (!key) return showSignIn();
  try {
    start(await api.me(key));
  } catch (e) {
    if (e.status === 401) signOut("Your API key is no longer accepted. Sign in again.");
    else showSignIn(e.message);
  }
}

boot();
