// loom serve: the text generation page. Tokens stream from /api/generate; Stop ends the request,
// and the server stops generating as soon as it sees the connection close.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { controller: null, timer: null, started: 0 };

function fieldNumber(id) {
  const text = $(id).value.trim();
  if (text === "") return null;
  const n = Number(text);
  return Number.isNaN(n) ? text : n;
}

function setRunning(on) {
  $("generate").disabled = on;
  $("stop").disabled = !on;
  if (!on && state.timer) {
    clearInterval(state.timer);
    state.timer = null;
  }
}

function showStats(tokens, elapsed, rate) {
  $("token-count").textContent = `Tokens: ${tokens}`;
  $("elapsed").textContent = `Elapsed: ${elapsed.toFixed(2)} s`;
  $("tokens-per-second").textContent = `Tokens/s: ${rate.toFixed(1)}`;
}

async function generate() {
  showError($("error"), null);
  const chat = $("chat").checked;
  const prompt = $("prompt").value;
  const body = {
    prompt,
    max_tokens: fieldNumber("max-tokens"),
    temperature: fieldNumber("temperature"),
    top_p: fieldNumber("top-p"),
    seed: fieldNumber("seed"),
    chat,
  };
  const output = $("output");
  output.replaceChildren();
  if (!chat) output.append(el("span", prompt, "prompt-echo"));
  const completion = el("span", "", "completion");
  output.append(completion);
  showStats(0, 0, 0);
  state.controller = new AbortController();
  state.started = performance.now();
  setRunning(true);
  $("status").textContent = "sending…";
  state.timer = setInterval(() => {
    $("elapsed").textContent = `Elapsed: ${((performance.now() - state.started) / 1000).toFixed(2)} s`;
  }, 100);
  let finished = false;
  try {
    const response = await fetch("/api/generate", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
      signal: state.controller.signal,
    });
    if (!response.ok) throw await errorOf(response);
    await readEvents(response, (name, data) => {
      if (name === "queued") {
        $("status").textContent = `waiting for the model (${data.ahead} request${data.ahead === 1 ? "" : "s"} ahead)`;
      } else if (name === "start") {
        $("status").textContent = `generating (prompt: ${data.prompt_tokens} tokens)`;
      } else if (name === "token") {
        if (data.text) completion.textContent += data.text;
        clearInterval(state.timer);
        state.timer = null;
        showStats(data.tokens, data.elapsed, data.tokens_per_second);
      } else if (name === "done") {
        finished = true;
        showStats(data.completion_tokens, data.elapsed, data.tokens_per_second);
        const why = { stop: "end of text", length: "max tokens reached", cancelled: "stopped" }[data.reason] || data.reason;
        $("status").textContent = `done: ${data.completion_tokens} tokens (${why}); prompt ${data.prompt_tokens} tokens in ${data.prefill_seconds.toFixed(2)} s`;
      } else if (name === "error") {
        showError($("error"), { message: data.message, type: "server_error" });
      }
    });
    if (!finished) $("status").textContent = "the stream ended early";
  } catch (e) {
    if (e.name === "AbortError") {
      $("status").textContent = "stopped";
    } else {
      showError($("error"), e);
      $("status").textContent = "";
    }
  } finally {
    setRunning(false);
    state.controller = null;
  }
}

function stop() {
  if (state.controller) state.controller.abort();
}

async function start() {
  $("generate").addEventListener("click", generate);
  $("stop").addEventListener("click", stop);
  $("prompt").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) generate();
  });
  const status = await watchServerStatus($("server-status"));
  if (status && status.model) {
    $("model-name").textContent = status.model.model;
  } else if (status) {
    $("model-name").textContent = "no language model (started with --no-model)";
  }
  document.body.dataset.ready = "true";
}

document.addEventListener("DOMContentLoaded", () => {
  start().catch((e) => showError($("error"), e));
});
