// Previous (newer) / next (older) for a list the server pages (`limit`, `offset`,
// `total`), shown newest first. A list whose answer had no `total` is whole, and gets no pager.

import { h } from "./dom.js";
import { PAGE_SIZE, goToPage, setError, state } from "./store.js";

export function pager(kind, noun) {
  const { page, total } = state.pages[kind];
  if (total === null || total <= PAGE_SIZE) return null;
  const first = page * PAGE_SIZE;
  const last = Math.min(first + state[kind].length, total);
  const go = (to) => goToPage(kind, to).then(() => window.scrollTo(0, 0), (e) => setError(`pager:${kind}`, e.message));
  return h(
    "nav.pager",
    { id: `${kind}-pager`, "aria-label": `Pages of ${noun}`, dataset: { key: "pager" } },
    h("button.btn.btn-ghost.btn-sm", { type: "button", "data-page": "previous", disabled: page === 0, onclick: () => go(page - 1) }, "← Previous"),
    h("span.muted.small.pager-range", `${first + 1}–${last} of ${total} ${noun}`),
    h("button.btn.btn-ghost.btn-sm", { type: "button", "data-page": "next", disabled: last >= total, onclick: () => go(page + 1) }, "Next →"),
  );
}
