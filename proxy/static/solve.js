// The math and coding modes: each message goes to /solve/<mode> as a problem on its own; its
// solution streams like a chat answer, then the answer or the code found in it is shown.

const KEYS = "(Enter sends, Shift+Enter: new line)";
export const MODES = {
  chat: { placeholder: `Message ${KEYS}` },
  math: {
    placeholder: `A math problem ${KEYS}`, field: "answer", label: "Answer",
    none: "No final answer found in the solution (no \\boxed{} and no “Answer:” line).",
  },
  coding: {
    placeholder: `A programming problem ${KEYS}`, field: "code", label: "Code",
    none: "No code found in the solution (no complete ``` block).",
  },
};

/** The body of a /solve request: the problem, the model, and the settings that apply. */
export function solveRequest(problem, model, numbers) {
  const request = model ? { problem, model } : { problem }; // unnamed: the server's model
  if ("temperature" in numbers) request.temperature = numbers.temperature;
  if ("max_tokens" in numbers) request.max_new_tokens = numbers.max_tokens;
  return request;
}

/** Take one event of a streamed solution: a piece of its text (given to addPiece), or the
 * whole answer that ends it, whose answer or code is then shown. */
export function takeSolved(event, kind, answer, view, addPiece) {
  if (typeof event.text === "string" && event.text) addPiece(event.text, answer, view);
  if (typeof event.solution !== "string") return;
  answer.usage = event.usage || null;
  answer.finish = event.finish_reason;
  showExtracted(view, kind, event);
}

/** Show what the server read from the solution under it: the answer, the code, or why none. */
export function showExtracted(view, kind, answer) {
  const mode = MODES[kind];
  const value = answer[mode.field];
  const box = document.createElement("div");
  box.className = "extracted";
  box.dataset.testid = "extracted";
  box.dataset.found = String(typeof value === "string");
  const label = document.createElement("span");
  label.className = "who";
  label.textContent = mode.label;
  const body = document.createElement(kind === "coding" ? "pre" : "p");
  body.className = "value";
  body.dataset.testid = "extracted-value";
  body.textContent = typeof value === "string" ? value : mode.none; // never HTML
  box.append(label, body);
  view.item.insertBefore(box, view.meta);
}
