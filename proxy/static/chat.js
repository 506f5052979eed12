// The chat page: the conversation, the settings, and one streamed answer at a time.

import { ApiError, fetchModelName, streamChat, streamSolve } from "./api.js";
import { addAssistantMessage, addMessage, answerStats, appendText, nearEnd, scrollToEnd } from "./messages.js";
import { MODES, solveRequest, takeSolved } from "./solve.js";
import { loadSettings, loadToken, saveSettings, saveToken, takeTokenFromFragment } from "./store.js";

const $ = (id) => document.getElementById(id);
const ui = {
  token: $("token"), system: $("system"), temperature: $("temperature"), topP: $("top-p"),
  maxTokens: $("max-tokens"), settings: $("settings"), model: document.querySelector("[data-testid=model-name]"),
  messages: $("messages"), composer: $("composer"), prompt: $("prompt"), send: $("send"),
  stop: $("stop"), status: $("status"), newChat: $("new-chat"), mode: $("mode"),
};
const SETTING_FIELDS = {
  system: ui.system, temperature: ui.temperature, top_p: ui.topP, max_tokens: ui.maxTokens, mode: ui.mode,
};
// A small model can ramble until its context is full; a bound keeps a first try quick.
const DEFAULT_SETTINGS = { max_tokens: "512", mode: "chat" };


const state = {
  history: [], // the turns sent with the next request: {role, content}
  controller: null, // the AbortController of the answer being streamed, if any
  model: "",
};

function init() {
  ui.token.value = takeTokenFromFragment() || loadToken();
  const settings = { ...DEFAULT_SETTINGS, ...loadSettings() };
  for (const [name, field] of Object.entries(SETTING_FIELDS)) field.value = settings[name] || "";
  if (!MODES[ui.mode.value]) ui.mode.value = "chat"; // a stored mode this page no longer has
  showMode();
  ui.mode.addEventListener("change", showMode);

  ui.token.addEventListener("change", onTokenChange);
  for (const field of Object.values(SETTING_FIELDS)) field.addEventListener("input", storeSettings);
  ui.composer.addEventListener("submit", (event) => { event.preventDefault(); send(); });
  ui.prompt.addEventListener("keydown", onPromptKey);
  ui.stop.addEventListener("click", stop);
  ui.newChat.addEventListener("click", newChat);

  if (ui.token.value) {
    loadModel();
    ui.prompt.focus();
  } else {
    askForToken("Paste your token to start.");
  }
}

function onTokenChange() {
  ui.token.value = ui.token.value.trim();
  saveToken(ui.token.value);
  state.model = "";
  if (ui.token.value) loadModel();
}

function showMode() {
  ui.prompt.placeholder = MODES[ui.mode.value].placeholder;
}

function storeSettings() {
  const settings = {};
  for (const [name, field] of Object.entries(SETTING_FIELDS)) settings[name] = field.value;
  saveSettings(settings);
}

/** Enter sends, Shift+Enter is a new line (the textarea's own), Escape stops an answer. */
function onPromptKey(event) {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    send();
  } else if (event.key === "Escape" && state.controller) {
    stop();
  }
}

async function loadModel() {
  try {
    showModel(await fetchModelName(ui.token.value));
  } catch (err) {
    if (err instanceof ApiError && err.kind === "auth") askForToken(err.message);
    else setStatus(err.message);
  }
}

function showModel(name) {
  state.model = name;
  ui.model.textContent = name || "unknown";
}

function askForToken(message) {
  setStatus(message);
  ui.settings.open = true;
  ui.token.focus();
}

function setStatus(text) {
  ui.status.textContent = text;
}

function setBusy(busy) {
  ui.send.disabled = busy;
  ui.stop.disabled = !busy;
}

async function send() {
  const text = ui.prompt.value.trim();
  if (!text) return;
  if (state.controller) {
    setStatus("An answer is still coming: wait for it or press Stop.");
    return;
  }
  const token = ui.token.value.trim();
  if (!token) {
    askForToken("Paste your token first.");
    return;
  }
  ui.prompt.value = "";
  const mode = ui.mode.value;
  const turn = { role: "user", content: text };
  // New chat may replace the history while this answer is still ending: keep to this one.
  const context = state.history;
  addMessage(ui.messages, "user", "You", text);
  const view = addAssistantMessage(ui.messages, mode === "chat" ? "Assistant" : "Solution");
  const controller = (state.controller = new AbortController());
  setBusy(true);
  setStatus("Generating…");
  const answer = { text: "", started: performance.now(), first: 0, last: 0, pieces: 0, usage: null, finish: null };
  let outcome = "done";
  try {
    if (!state.model) showModel(await fetchModelName(token));
    if (mode === "chat") {
      const request = buildRequest([...context, turn]);
      for await (const chunk of streamChat(request, token, controller.signal)) take(chunk, answer, view);
    } else {
      const request = solveRequest(text, state.model, numberSettings());
      for await (const event of streamSolve(mode, request, token, controller.signal)) takeSolved(event, mode, answer, view, addPiece);
    }
  } catch (err) {
    outcome = controller.signal.aborted ? "stopped" : "error";
    if (outcome === "error") showError(view, err);
  }
  const follow = nearEnd();
  finish(view, answer, outcome);
  scrollToEnd(follow);
  // What the user saw answered (stopped answers too) is context for the next turn; a failed
  // turn is not, and its prompt goes back in the box so that trying again is one key. A
  // problem solved in another mode is not part of the conversation.
  if (mode === "chat" && outcome !== "error" && answer.text) context.push(turn, { role: "assistant", content: answer.text });
  else if (outcome === "error" && !ui.prompt.value) ui.prompt.value = text;
  state.controller = null;
  setBusy(false);
  if (!(outcome === "error" && view.error.dataset.kind === "auth")) ui.prompt.focus();
}

function stop() {
  if (state.controller) state.controller.abort();
}

function newChat() {
  stop();
  state.history = [];
  ui.messages.replaceChildren();
  setStatus("New chat.");
  ui.prompt.focus();
}

/** The request body for these turns, with the system prompt and the sampling settings set. */
function buildRequest(turns) {
  const system = ui.system.value.trim();
  const request = { model: state.model, messages: system ? [{ role: "system", content: system }, ...turns] : turns };
  return { ...request, ...numberSettings() };
}

/** The sampling settings that are filled in, as numbers. */
function numberSettings() {
  const numbers = {};
  for (const [name, field] of [["temperature", ui.temperature], ["top_p", ui.topP], ["max_tokens", ui.maxTokens]]) {
    // Left empty, the server's defaults apply; out of range, the server's 400 says why.
    if (field.value.trim() !== "" && !Number.isNaN(field.valueAsNumber)) numbers[name] = field.valueAsNumber;
  }
  return numbers;
}

/** Add one streamed chunk to the answer and to its message. */
function take(chunk, answer, view) {
  if (chunk.usage) answer.usage = chunk.usage;
  for (const choice of chunk.choices || []) {
    const piece = choice.delta && choice.delta.content;
    if (piece) addPiece(piece, answer, view);
    if (choice.finish_reason) answer.finish = choice.finish_reason;
  }
}

function addPiece(piece, answer, view) {
  const now = performance.now();
  if (!answer.first) answer.first = now;
  answer.last = now;
  answer.pieces += 1;
  answer.text += piece;
  appendText(view.text, piece);
}

function finish(view, answer, outcome) {
  view.item.dataset.state = outcome;
  view.item.setAttribute("aria-busy", "false");
  view.meta.textContent = answerStats(answer, outcome);
  const words = { done: "Answer complete.", stopped: "Stopped.", error: "The answer failed." };
  setStatus(words[outcome]);
}

function showError(view, err) {
  const message = err instanceof ApiError ? err.message : `Something went wrong: ${err.message || err}`;
  view.error.textContent = message;
  view.error.dataset.kind = err.kind || "unknown";
  if (err.kind === "auth") askForToken(message);
}

init();
