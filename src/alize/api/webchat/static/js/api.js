// Talking to /chat/api: JSON requests with the session's CSRF token in a header (the token
// lives only in memory; the session cookie is HttpOnly), and streamed replies read from a
// fetch body (server-sent event lines) so that stopping is simply aborting the fetch.

let csrfToken = "";

export function setCsrf(token) {
  csrfToken = token || "";
}

export class ApiError extends Error {
  constructor(status, error) {
    super(error?.message || `HTTP ${status}`);
    this.status = status;
    this.code = error?.code || null;
    this.type = error?.type || null;
  }
}

async function parse(response) {
  const text = await response.text();
  let body = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = null;
  }
  if (!response.ok) throw new ApiError(response.status, body?.error);
  return body;
}

function headers(extra = {}) {
  return { "X-CSRF-Token": csrfToken, ...extra };
}

export async function api(method, path, body) {
  const init = { method, credentials: "same-origin", headers: headers() };
  if (body instanceof FormData) {
    init.body = body;
  } else if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(`/chat/api${path}`, init);
  } catch (err) {
    throw new ApiError(0, { message: String(err), code: "network" });
  }
  return parse(response);
}

// POST and call onEvent for each JSON event of the stream; resolves when the stream ends.
export async function stream(path, body, onEvent, signal) {
  const response = await fetch(`/chat/api${path}`, {
    method: "POST",
    credentials: "same-origin",
    headers: headers({ "Content-Type": "application/json", Accept: "text/event-stream" }),
    body: JSON.stringify(body),
    signal,
  });
  if (!response.ok) await parse(response);
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const frame = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      for (const line of frame.split("\n")) {
        if (line.startsWith("data: ")) onEvent(JSON.parse(line.slice(6)));
      }
    }
  }
}
