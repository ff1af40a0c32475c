// Small DOM helpers: element building, keyed patching, and time formatting.

/** h("button.btn", {onclick, disabled}, "text", child, ...) builds an element. */
export function h(spec, props, ...children) {
  const [tag, ...classes] = spec.split(".");
  const el = document.createElement(tag || "div");
  if (classes.length) el.className = classes.join(" ");
  if (props && (typeof props !== "object" || props instanceof Node || Array.isArray(props))) {
    children.unshift(props);
    props = null;
  }
  for (const [k, v] of Object.entries(props || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = [el.className, v].filter(Boolean).join(" ");
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k === "value") el.value = v;
    else if (v === true) el.setAttribute(k, "");
    else el.setAttribute(k, String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** An inline SVG from path data (the arrows and icons). */
export function svg(viewBox, paths, cls = "icon") {
  const ns = "http://www.w3.org/2000/svg";
  const el = document.createElementNS(ns, "svg");
  el.setAttribute("viewBox", viewBox);
  el.setAttribute("class", cls);
  el.setAttribute("aria-hidden", "true");
  for (const d of paths) {
    const p = document.createElementNS(ns, "path");
    p.setAttribute("d", d);
    el.append(p);
  }
  return el;
}

/**
 * Replace `container`'s children with `nodes`, keeping any existing child whose markup
 * is unchanged. Live updates arrive while people click: leaving untouched nodes in place
 * means a button under the pointer is not swapped out between mousedown and mouseup.
 */
export function patch(container, nodes) {
  const old = new Map();
  for (const child of [...container.children]) if (child.dataset.key) old.set(child.dataset.key, child);
  const next = nodes.map((n) => {
    const prev = n.dataset.key && old.get(n.dataset.key);
    if (prev && prev.outerHTML === n.outerHTML) return prev;
    return n;
  });
  // Move or insert in order; remove whatever is left over.
  next.forEach((n, i) => {
    if (container.children[i] !== n) container.insertBefore(n, container.children[i] || null);
  });
  while (container.children.length > next.length) container.lastElementChild.remove();
}

export function fmtAgo(epoch) {
  if (!epoch) return "never";
  const s = Math.max(0, Date.now() / 1000 - epoch);
  if (s < 45) return "just now";
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}

/** A date with its time, always with the day: "2 Dec 2026, 03:31:05". */
export function fmtDateTime(epoch) {
  if (!epoch) return "—";
  return new Date(epoch * 1000).toLocaleString([], {
    year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit",
  });
}

/**
 * How long something took. `ms` (the API's `duration_ms`) is precise and shown to the
 * millisecond below ten seconds; without it only the epoch seconds are known, so the
 * figure is whole seconds and never pretends otherwise ("< 1 s", not "0 ms").
 */
export function fmtDuration(start, end, ms) {
  if (typeof ms === "number" && ms >= 0) {
    if (ms < 1000) return `${Math.round(ms)} ms`;
    if (ms < 10_000) return `${(ms / 1000).toFixed(2)} s`;
    if (ms < 60_000) return `${(ms / 1000).toFixed(1)} s`;
    return fmtSeconds(Math.round(ms / 1000));
  }
  if (!start) return "—";
  const secs = Math.max(0, Math.floor((end || Date.now() / 1000) - start));
  return secs < 1 ? "< 1 s" : fmtSeconds(secs);
}

function fmtSeconds(secs) {
  if (secs < 60) return `${secs} s`;
  const m = Math.floor(secs / 60);
  if (m < 60) return `${m}m ${secs % 60}s`;
  return `${Math.floor(m / 60)}h ${m % 60}m`;
}

export function plural(n, word) {
  return `${n} ${word}${n === 1 ? "" : "s"}`;
}
