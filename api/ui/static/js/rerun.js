// "Rerun from here" on the steps of a failed or cancelled run: a new run of the same steps
// that carries over the ones before this step as they ended, then shows the new run.

import { request } from "./api.js";
import { actionButton } from "./components.js";
import { canOperate, putRun, setError } from "./store.js";

const RERUNNABLE = new Set(["failed", "cancelled"]);

export async function rerunFrom(run, stepIndex) {
  const where = `run:${run.id}`;
  try {
    const res = await request("POST", "/api/pipelines/run", {
      body: { action: "rerun", run_id: run.id, from_step: stepIndex },
      what: "rerun this run",
    });
    setError(where, null);
    putRun(res.run);
    location.hash = `#/runs/${res.run.id}`;
  } catch (e) {
    setError(where, e.message);
  }
}

/** The step row's button, or null where a rerun is not offered. */
export function rerunButton(run, step) {
  if (!RERUNNABLE.has(run.status) || !canOperate()) return null;
  const label = `Rerun from step ${step.step_index + 1}`;
  // Disabled while the request is in flight: a double click must not make two runs.
  const button = actionButton("Rerun from here", "btn-ghost", () => rerunFrom(run, step.step_index), { title: label });
  button.classList.add("btn-sm");
  button.setAttribute("aria-label", label);
  button.dataset.action = "rerun-from";
  return button;
}
