// The page's calls to the server, all through the proxy with the bearer token, and the
// errors they can end with, in words a person can act on.

import { sseEvents } from "./sse.js";

/** A failed call: `kind` is auth, busy, refused, backend, cut or network; `message` is for people. */
export class ApiError extends Error {
  constructor(kind, message, status = 0) {
    super(message);
    this.kind = kind;
    this.status = status;
  }
}

/** The served model's name from GET /v1/models. */
export async function fetchModelName(token) {
  const response = await call("/v1/models", { headers: authHeaders(token) });
  const body = await response.json();
  return body.data && body.data.length ? body.data[0].id : "";
}

/** Yields the chunks of a streamed chat completion; ends at [DONE], throws ApiError otherwise. */
export async function* streamChat(request, token, signal) {
  const response = await call("/v1/chat/completions", {
    method: "POST",
    headers: { ...authHeaders(token), "Content-Type": "application/json" },
    body: JSON.stringify({ ...request, stream: true, stream_options: { include_usage: true } }),
    signal,
  });
  try {
    for await (const data of sseEvents(response.body)) {
      if (data === "[DONE]") return;
      const chunk = parseChunk(data);
      if (chunk.error) throw backendFailed(chunk.error);
      yield chunk;
    }
  } catch (err) {
    if (err instanceof ApiError || signal.aborted) throw err;
    throw cutOff();
  }
  throw cutOff(); // the stream ended without [DONE]
}

/**
 * Yields the events of a streamed solution from /solve/math or /solve/coding: `{text}` pieces,
 * then the whole answer (it has `solution`), which ends it; throws ApiError otherwise.
 */
export async function* streamSolve(kind, request, token, signal) {
  const response = await call(`/solve/${kind}`, {
    method: "POST",
    headers: { ...authHeaders(token), "Content-Type": "application/json" },
    body: JSON.stringify({ ...request, stream: true }),
    signal,
  });
  try {
    for await (const data of sseEvents(response.body)) {
      const event = parseChunk(data);
      if (event.status_code) throw backendFailed(event);
      yield event;
      if (typeof event.solution === "string") return;
    }
  } catch (err) {
    if (err instanceof ApiError || signal.aborted) throw err;
    throw cutOff();
  }
  throw cutOff(); // the stream ended without the answer
}

function authHeaders(token) {
  return { Authorization: `Bearer ${token}` };
}

/** fetch() that turns network failures and error statuses into ApiError. */
async function call(path, init) {
  let response;
  try {
    response = await fetch(path, { cache: "no-store", ...init });
  } catch (err) {
    if (init.signal && init.signal.aborted) throw err;
    throw new ApiError("network", "The server could not be reached. Check that it is running, then try again.");
  }
  if (!response.ok) throw await httpError(response);
  return response;
}

function parseChunk(data) {
  try {
    return JSON.parse(data);
  } catch {
    throw new ApiError("backend", "The server sent an answer this page cannot read.");
  }
}

function backendFailed(error) {
  const detail = typeof error === "object" && error.message ? error.message : String(error);
  return new ApiError("backend", `The model failed in the middle of the answer: ${detail}`);
}

function cutOff() {
  return new ApiError("cut", "The answer was cut off: the connection closed before it ended.");
}

/** The ApiError for an answer with an error status, using the server's own message. */
export async function httpError(response) {
  const status = response.status;
  const message = await serverMessage(response);
  const retry = retryAfterSeconds(response.headers.get("Retry-After"));
  if (status === 401) {
    return new ApiError("auth", `The token was refused (${message}). Paste a valid token in Settings.`, status);
  }
  if (status === 503 || status === 429) {
    const when = retry === null ? "in a few seconds" : `in ${retry} second${retry === 1 ? "" : "s"}`;
    const why = status === 429 ? "This token already has too many requests running" : "The server is busy";
    return new ApiError("busy", `${why} (${message}). Try again ${when}.`, status);
  }
  if (status === 400 || status === 413) {
    return new ApiError("refused", `The request was refused: ${message}`, status);
  }
  if (status === 502 || status === 504) {
    return new ApiError("backend", `The proxy could not get an answer from the model server (${message}).`, status);
  }
  return new ApiError("backend", `The server answered ${status}: ${message}`, status);
}

/** The message of an OpenAI-shaped or native error body, else the status text. */
async function serverMessage(response) {
  try {
    const body = await response.json();
    const message = body.error ? body.error.message : body.message;
    if (message) return String(message);
  } catch {
    // not JSON: fall back to the status line
  }
  return response.statusText || `HTTP ${response.status}`;
}

/** Retry-After in whole seconds from now (it may be a number or an HTTP date), or null. */
export function retryAfterSeconds(value) {
  if (!value) return null;
  if (/^\d+$/.test(value.trim())) return Number(value.trim());
  const date = Date.parse(value);
  return Number.isNaN(date) ? null : Math.max(0, Math.ceil((date - Date.now()) / 1000));
}
