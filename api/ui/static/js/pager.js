// Previous / next for a list the server pages (`limit`, `offset`, `total`). A list whose
// answer had no `total` is whole, and gets no pager.

import { h } from "./dom.js";
import { PAGE_SIZE, goToPage, setError, state } from "./store.js";

export function pager(kind, noun) {
  const { offset, total } = state.pages[kind];
  if (total === null || total <= PAGE_SIZE) return null;
  const last = Math.min(offset + state[kind].length, total);
  const go = (to) => goToPage(kind, to).then(() => window.scrollTo(0, 0), (e) => setError(`pager:${kind}`, e.message));
  return h(
    "nav.pager",
    { id: `${kind}-pager`, "aria-label": `Pages of ${noun}`, dataset: { key: "pager" } },
    h("button.btn.btn-ghost.btn-sm", { type: "button", "data-page": "previous", disabled: offset === 0, onclick: () => go(offset - PAGE_SIZE) }, "← Previous"),
    h("span.muted.small.pager-range", `${offset + 1}–${last} of ${total} ${noun}`),
    h("button.btn.btn-ghost.btn-sm", { type: "button", "data-page": "next", disabled: last >= total, onclick: () => go(offset + PAGE_SIZE) }, "Next →"),
  );
}
