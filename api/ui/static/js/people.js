// Who resolves a step: a person (a `manual` agent profile) or a program. Only a step
// that waits for a person is offered Step Done / Step Failed as its normal controls.

import { state } from "./store.js";

/** The runtime of the profile a step uses, or null when the UI cannot tell. */
export function stepRuntime(step) {
  // The run's own snapshot says which profile it used, when the server shows it;
  // otherwise the step's template does (it may have been edited since, or deleted).
  const agent = step.agent ?? state.templateIndex.get(step.template_id)?.agent;
  if (agent == null) return null;
  const profile = state.agents.find((a) => a.name === agent);
  if (profile) return profile.runtime;
  // No profile list to ask: the shipped `default` profile and `manual` are people.
  if (!state.agents.length && (agent === "default" || agent === "manual")) return "manual";
  return null;
}

export function waitsForPerson(run, step) {
  if (!step || run.status !== "running" || step.status !== "running") return false;
  // The server says so when it can (`waiting_for_person`); older servers leave it to us.
  if (typeof step.waiting_for_person === "boolean") return step.waiting_for_person;
  return stepRuntime(step) === "manual";
}

/** A step's status in words: a person's step is "waiting for you", not "running". */
export function statusLabel(run, step) {
  return waitsForPerson(run, step) ? "waiting for you" : step.status;
}
