// The conversation's views: a message's list item, an answer growing piece by piece, the line
// of figures under it, and keeping the reader at the end while text arrives.

export function addMessage(list, role, who, text) {
  const item = document.createElement("li");
  item.className = `message ${role}`;
  const label = document.createElement("span");
  label.className = "who";
  label.textContent = who;
  const body = document.createElement("div");
  body.className = "text";
  body.dataset.testid = "message-text";
  body.textContent = text; // never HTML: model and user text alike
  item.append(label, body);
  list.append(item);
  scrollToEnd(true);
  return { item, text: body };
}

export function addAssistantMessage(list, who) {
  const view = addMessage(list, "assistant", who, "");
  view.item.dataset.testid = "assistant-message";
  view.item.dataset.state = "streaming";
  // Screen readers announce the answer once it is whole, not piece by piece.
  view.item.setAttribute("aria-busy", "true");
  view.meta = document.createElement("p");
  view.meta.className = "meta";
  view.error = document.createElement("p");
  view.error.className = "error";
  view.error.setAttribute("role", "alert");
  view.item.append(view.meta, view.error);
  return view;
}

export function appendText(element, piece) {
  const follow = nearEnd();
  element.append(piece); // a text node
  scrollToEnd(follow);
}

/** Whether the reader is at the end of the page, where new text should keep them. */
export function nearEnd() {
  return window.innerHeight + window.scrollY >= document.documentElement.scrollHeight - 80;
}

export function scrollToEnd(follow) {
  if (follow) window.scrollTo(0, document.documentElement.scrollHeight);
}

/** "first token 0.21 s · 40 tokens · 31.5 tokens/s", from the usage when the server sent it. */
export function answerStats(answer, outcome) {
  const parts = [];
  if (outcome === "stopped") parts.push("stopped");
  if (answer.first) parts.push(`first token ${((answer.first - answer.started) / 1000).toFixed(2)} s`);
  // Without usage (a stopped stream has none) each streamed piece is about one token.
  const tokens = answer.usage ? answer.usage.completion_tokens : answer.pieces;
  if (tokens) parts.push(`${answer.usage ? "" : "~"}${tokens} token${tokens === 1 ? "" : "s"}`);
  const seconds = (answer.last - answer.first) / 1000;
  if (tokens > 1 && seconds > 0) parts.push(`${((tokens - 1) / seconds).toFixed(1)} tokens/s`);
  if (answer.finish === "length") parts.push("cut at max tokens");
  return parts.join(" · ");
}
