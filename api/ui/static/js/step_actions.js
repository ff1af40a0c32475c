// Actions offered on one step of a run's detail page. A feature registers a provider
// that looks at the run and the step and returns a button (or null); the page puts what
// they return in the step row's `.step-actions` slot, in registration order.

const providers = [];

/** provide(run, step) -> Node | null, called on every render of the step row. */
export function registerStepAction(provide) {
  providers.push(provide);
}

export function stepActions(run, step) {
  return providers.map((provide) => provide(run, step)).filter(Boolean);
}
