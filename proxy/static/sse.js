// Server-sent events from a byte stream: the `data:` payload of each event, whatever the
// chunk boundaries (a line, a CRLF or a UTF-8 character may be split between two reads).

// A CR at the very end of a chunk may be the first half of a CRLF: it is kept for the next one.
const LINE_END = /\r\n|\n|\r(?!$)/;

/** Splits decoded text into events and returns each event's data. */
export class SseParser {
  constructor() {
    this.partial = "";
    this.data = [];
  }

  /** Feed the next piece of text; returns the data of the events it completed. */
  push(text) {
    const lines = (this.partial + text).split(LINE_END);
    this.partial = lines.pop();
    const events = [];
    for (const line of lines) {
      const event = this.line(line);
      if (event !== null) events.push(event);
    }
    return events;
  }

  /** One whole line: an event's data when the line is the blank one that ends it, else null. */
  line(line) {
    if (line === "") {
      if (this.data.length === 0) return null;
      const event = this.data.join("\n");
      this.data = [];
      return event;
    }
    if (line.startsWith(":")) return null; // a comment (keep-alive)
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "data") this.data.push(value);
    return null;
  }
}

/** Yields the data of each event of a fetch Response body, as the bytes arrive. */
export async function* sseEvents(body) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  const parser = new SseParser();
  let finished = false;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      yield* parser.push(decoder.decode(value, { stream: true }));
    }
    finished = true;
    // An event without its blank line at the end of the stream is incomplete: dropped.
    parser.push(decoder.decode());
  } finally {
    // The caller stopped early (it saw [DONE] or an error event): let the connection go.
    if (!finished) reader.cancel().catch(() => {});
  }
}
