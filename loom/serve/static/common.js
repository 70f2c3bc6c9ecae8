// loom serve: helpers shared by both pages (JSON calls, server-sent events over fetch, errors).
"use strict";

/** An error answered by the server as {"error": {"message", "type", "param", "code"}}. */
class ApiError extends Error {
  constructor(status, body) {
    const err = (body && body.error) || {};
    super(err.message || `HTTP ${status}`);
    this.status = status;
    this.type = err.type || "error";
    this.param = err.param || null;
    this.code = err.code || null;
  }
}

async function errorOf(response) {
  let body = null;
  try {
    body = await response.json();
  } catch (_) {
    body = { error: { message: `HTTP ${response.status} ${response.statusText}` } };
  }
  return new ApiError(response.status, body);
}

/** POST/GET JSON; resolves to the parsed body, rejects with an ApiError. */
async function api(path, { method = "GET", body = undefined, signal = undefined } = {}) {
  const init = { method, signal, headers: {} };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  if (!response.ok) throw await errorOf(response);
  if (response.status === 204) return null;
  return response.json();
}

/** Read a text/event-stream response, calling onEvent(name, data) for every event. */
async function readEvents(response, onEvent) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      let name = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) name = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (data.length) onEvent(name, JSON.parse(data.join("\n")));
    }
  }
}

/** Show an error (ApiError or any Error) in a box; the loom path (param) is highlighted. */
function showError(box, error) {
  box.replaceChildren();
  if (!error) {
    box.hidden = true;
    return;
  }
  const kind = document.createElement("span");
  kind.className = "kind";
  kind.textContent = (error.type && error.type !== "error" ? error.type : "Error") + ": ";
  box.append(kind);
  const message = String(error.message || error);
  const param = error.param;
  const at = param ? message.indexOf(param) : -1;
  if (at >= 0) {
    const code = document.createElement("code");
    code.textContent = param;
    box.append(message.slice(0, at), code, message.slice(at + param.length));
  } else {
    box.append(message);
  }
  box.hidden = false;
}

function formatNumber(value, digits = 4) {
  if (value === null || value === undefined) return "–";
  if (typeof value !== "number") return String(value);
  if (value !== 0 && (Math.abs(value) < 1e-3 || Math.abs(value) >= 1e5)) return value.toExponential(3);
  return value.toFixed(digits);
}

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = text;
  if (className) node.className = className;
  return node;
}

/** Show the server's status, and keep refreshing it while the model loads. */
async function watchServerStatus(target) {
  const status = await showServerStatus(target);
  if (status && status.model && !status.model.ready) {
    const poll = setInterval(async () => {
      const now = await showServerStatus(target);
      if (!now || !now.model || now.model.ready) clearInterval(poll);
    }, 1000);
  }
  return status;
}

async function showServerStatus(target) {
  try {
    const status = await api("/api/status");
    const model = status.model;
    let text = `loom ${status.version}`;
    if (model) text += ` · model ${model.model}: ${model.ready ? (model.load_error ? "failed to load" : "ready") : "loading…"}`;
    target.textContent = text;
    return status;
  } catch (_) {
    target.textContent = "server unreachable";
    return null;
  }
}
