// The one in-page confirmation that destructive actions (Cancel, Step Failed, Delete)
// ask for. A real <dialog>, so it is keyboard-usable, testable and styled like the page.

import { h } from "./dom.js";

/**
 * Ask once. Resolves with `{ reason }` when confirmed (reason: the text typed in the
 * optional reason box, or ""), or null when the person backs out (button, Escape).
 */
export function confirmAction({ title, message, confirmLabel, keepLabel = "Keep it", reason = null }) {
  return new Promise((resolve) => {
    document.getElementById("confirm-dialog")?.close();
    const box = reason
      ? h("textarea", { id: "confirm-reason", rows: 2, maxlength: 2000, placeholder: reason.placeholder || "" })
      : null;
    const yes = h("button.btn.btn-danger", { type: "submit", "data-confirm": "yes" }, confirmLabel);
    const no = h("button.btn.btn-ghost", { type: "button", "data-confirm": "no" }, keepLabel);
    const dialog = h(
      "dialog.sheet.confirm",
      { id: "confirm-dialog", role: "alertdialog", "aria-labelledby": "confirm-title", "aria-describedby": "confirm-message" },
      h(
        "form.form",
        { method: "dialog" },
        h("h2", { id: "confirm-title" }, title),
        h("p", { id: "confirm-message" }, message),
        box ? h("label.field", h("span", reason.label || "Reason", h("em.muted", " optional")), box) : null,
        h("div.form-actions", no, yes),
      ),
    );
    let answer = null;
    dialog.querySelector("form").addEventListener("submit", (e) => {
      e.preventDefault();
      answer = { reason: box ? box.value.trim() : "" };
      dialog.close();
    });
    no.addEventListener("click", () => dialog.close());
    dialog.addEventListener("close", () => {
      dialog.remove();
      resolve(answer);
    });
    document.body.append(dialog);
    dialog.showModal();
    (box || no).focus(); // the safe choice has the focus: Enter alone destroys nothing
  });
}
