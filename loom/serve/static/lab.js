// loom serve: the network lab page. Every network lives on the server in this page's own session.
"use strict";

const STORAGE_KEY = "loom.lab.saved";
const $ = (id) => document.getElementById(id);

const lab = {
  sessionId: null,
  built: { config: null, data: null, seed: null }, // editor texts the server's network was built from
  presets: [],
  losses: [],
  plannedEpochs: 0,
  training: false,
  drawPending: false,
};

// ------------------------------------------------------------------ editors and fields
function seedValue() {
  const text = $("seed").value.trim();
  if (text === "") return null;
  const n = Number(text);
  return Number.isInteger(n) && n >= 0 ? n : text; // the server explains a bad seed
}

function numberField(id) {
  const text = $(id).value.trim();
  const n = Number(text);
  return text === "" || Number.isNaN(n) ? text : n;
}

function applyPreset(name) {
  const preset = lab.presets.find((p) => p.name === name);
  if (!preset) return;
  $("config-editor").value = preset.config;
  $("data-editor").value = preset.data;
  $("epochs").value = preset.training.epochs;
  $("learning-rate").value = preset.training.learning_rate;
  $("loss").value = preset.training.loss;
  $("optimizer").value = preset.training.optimizer;
  $("gradient-clip").value = preset.training.gradient_clip;
}

function error(e) {
  showError($("error"), e);
}

// ------------------------------------------------------------------ session
async function createSession() {
  const body = { config: $("config-editor").value, data: $("data-editor").value, seed: seedValue() };
  const state = await api("/api/lab/sessions", { method: "POST", body });
  lab.sessionId = state.session_id;
  lab.built = { config: body.config, data: body.data, seed: body.seed };
  render(state);
  return state;
}

/** Make the server's network match the editors: rebuild on a new config/seed, new data only on new data. */
async function syncNetwork({ rebuild = false } = {}) {
  const config = $("config-editor").value;
  const data = $("data-editor").value;
  const seed = seedValue();
  if (!lab.sessionId) return createSession();
  const body = {};
  if (rebuild || config !== lab.built.config || seed !== lab.built.seed) {
    body.config = config;
    body.seed = seed;
  }
  if (data !== lab.built.data || body.config !== undefined) body.data = data;
  if (Object.keys(body).length === 0) return null;
  try {
    const state = await api(`/api/lab/sessions/${lab.sessionId}`, { method: "POST", body });
    lab.built = { config, data, seed };
    render(state);
    return state;
  } catch (e) {
    if (e.code === "session_not_found") {
      $("train-status").textContent = "this page's session had expired: a new network was built";
      return createSession();
    }
    throw e;
  }
}

// ------------------------------------------------------------------ rendering
function render(state) {
  const s = state.summary;
  $("summary").textContent =
    `grid ${s.grid.join("×")} · ${s.layers} layers · ${s.parameters.toLocaleString()} parameters · ` +
    `batch_size ${s.batch_size} · ${s.backend}`;
  renderLayers(state.layers);
  renderMethods(state.methods);
  $("network-diagram").innerHTML = state.diagram; // SVG built by the server from the network (escaped text)
  renderPredictions(state.predictions, state.quality, state.predictions_error);
}

function renderLayers(rows) {
  const body = $("layers");
  body.replaceChildren();
  let index = 0;
  for (const row of rows) {
    const tr = document.createElement("tr");
    if (row.depth > 0) tr.className = "branch";
    tr.append(el("td", row.depth === 0 ? String(index++) : ""));
    tr.append(el("td", row.grid || ""));
    const type = el("td", row.type + (row.activation ? ` · ${row.activation}` : ""));
    if (row.depth > 0) type.className = `depth-${Math.min(row.depth, 3)}`;
    tr.append(type);
    tr.append(el("td", row.detail));
    tr.append(el("td", row.in !== null ? `${row.in}→${row.out}` : "", "num"));
    tr.append(el("td", row.params.toLocaleString(), "num"));
    body.append(tr);
  }
}

function renderMethods(methods) {
  const list = $("methods");
  list.replaceChildren();
  for (const m of methods) {
    const li = el("li");
    li.append(el("code", m.signature));
    list.append(li);
  }
}

function short(values, size) {
  const shown = values.map((v) => formatNumber(v, 3)).join(", ");
  return size > values.length ? `[${shown}, … (${size})]` : `[${shown}]`;
}

function renderPredictions(predictions, quality, problem) {
  const body = $("predictions");
  body.replaceChildren();
  if (!predictions) {
    $("accuracy").textContent = problem ? `predictions unavailable: ${problem}` : "";
    $("quality-score").textContent = "Quality score: –";
    return;
  }
  for (const row of predictions.rows) {
    const tr = document.createElement("tr");
    tr.append(el("td", String(row.index), "num"));
    tr.append(el("td", short(row.input, row.input_size), "num"));
    tr.append(el("td", short(row.output, row.output_size), "num"));
    tr.append(el("td", JSON.stringify(typeof row.predicted === "number" ? +formatNumber(row.predicted, 3) : row.predicted), "num"));
    tr.append(el("td", JSON.stringify(row.expected), "num"));
    tr.append(el("td", row.correct ? "✓" : "✗", row.correct ? "mark ok" : "mark bad"));
    body.append(tr);
  }
  const hidden = predictions.total - predictions.rows.length;
  $("accuracy").textContent =
    `${predictions.correct}/${predictions.total} correct` + (hidden > 0 ? ` (first ${predictions.rows.length} shown)` : "");
  $("quality-score").textContent =
    quality && quality.score !== null
      ? `Quality score: ${quality.score.toFixed(2)}/100 (avg deviation ${quality.avg_deviation.toFixed(2)}%)`
      : `Quality score: n/a${quality && quality.reason ? ` (${quality.reason})` : ""}`;
}

// ------------------------------------------------------------------ loss chart (plain SVG)
function scheduleDraw() {
  $("loss-chart").setAttribute("data-points", String(lab.losses.length));
  if (lab.drawPending) return;
  lab.drawPending = true;
  requestAnimationFrame(() => {
    lab.drawPending = false;
    drawChart();
  });
}

function svgNode(tag, attrs, text) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

function drawChart() {
  const svg = $("loss-chart");
  const width = Math.max(svg.clientWidth, 300);
  const height = Math.max(svg.clientHeight, 160);
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.replaceChildren();
  const left = 58, right = 12, top = 12, bottom = 28;
  const plotW = width - left - right, plotH = height - top - bottom;
  const losses = lab.losses.filter((v) => v !== null && v > 0);
  svg.append(svgNode("rect", { x: left, y: top, width: plotW, height: plotH, fill: "#ffffff", stroke: "#d8dee4" }));
  if (losses.length === 0) {
    svg.append(svgNode("text", { x: left + plotW / 2, y: top + plotH / 2, "text-anchor": "middle", fill: "#656d76", "font-size": 12 }, "loss per epoch appears here while training"));
    return;
  }
  let lo = Math.log10(Math.min(...losses)), hi = Math.log10(Math.max(...losses));
  if (hi - lo < 1e-6) { lo -= 0.5; hi += 0.5; }
  lo = Math.floor(lo); hi = Math.ceil(hi);
  const epochs = Math.max(lab.plannedEpochs, lab.losses.length, 2);
  const x = (i) => left + (i / (epochs - 1)) * plotW;
  const y = (v) => top + (1 - (Math.log10(v) - lo) / (hi - lo)) * plotH;
  for (let p = lo; p <= hi; p++) {
    const yy = y(10 ** p);
    svg.append(svgNode("line", { x1: left, x2: left + plotW, y1: yy, y2: yy, stroke: "#eef1f4" }));
    svg.append(svgNode("text", { x: left - 6, y: yy + 4, "text-anchor": "end", "font-size": 10, fill: "#656d76" }, `1e${p}`));
  }
  svg.append(svgNode("text", { x: left + plotW, y: height - 8, "text-anchor": "end", "font-size": 10, fill: "#656d76" }, `epoch ${epochs}`));
  svg.append(svgNode("text", { x: left, y: height - 8, "font-size": 10, fill: "#656d76" }, "epoch 1"));
  const step = Math.max(1, Math.floor(lab.losses.length / (plotW * 2)));
  const points = [];
  for (let i = 0; i < lab.losses.length; i += step) {
    const v = lab.losses[i];
    if (v !== null && v > 0) points.push(`${x(i).toFixed(1)},${y(v).toFixed(1)}`);
  }
  const last = lab.losses.length - 1;
  if (last % step !== 0 && lab.losses[last] > 0) points.push(`${x(last).toFixed(1)},${y(lab.losses[last]).toFixed(1)}`);
  svg.append(svgNode("polyline", { points: points.join(" "), fill: "none", stroke: "#1a73e8", "stroke-width": 1.8 }));
}

// ------------------------------------------------------------------ training
function setTraining(on) {
  lab.training = on;
  for (const id of ["train", "build", "save-local", "load-local", "download", "upload", "preset"]) $(id).disabled = on;
  $("stop").disabled = !on;
}

function showLoss(value, label = "Final loss") {
  $("final-loss").textContent = `${label}: ${value === null || value === undefined ? "–" : formatNumber(value, 6)}`;
}

async function train() {
  error(null);
  try {
    await syncNetwork();
  } catch (e) {
    error(e);
    return;
  }
  const body = {
    epochs: numberField("epochs"),
    learning_rate: numberField("learning-rate"),
    loss: $("loss").value,
    optimizer: $("optimizer").value,
    gradient_clip: numberField("gradient-clip"),
  };
  setTraining(true);
  $("train-status").textContent = "starting…";
  try {
    const response = await fetch(`/api/lab/sessions/${lab.sessionId}/train`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    if (!response.ok) throw await errorOf(response);
    lab.losses = [];
    lab.plannedEpochs = Number(body.epochs) || 0;
    scheduleDraw();
    await readEvents(response, onTrainingEvent);
  } catch (e) {
    error(e);
    $("train-status").textContent = "";
  } finally {
    setTraining(false);
  }
}

function onTrainingEvent(name, data) {
  if (name === "queued") {
    $("train-status").textContent = data.message;
  } else if (name === "start") {
    lab.plannedEpochs = data.epochs;
    $("train-status").textContent = `training 0/${data.epochs}`;
  } else if (name === "progress") {
    lab.losses.push(...data.losses);
    scheduleDraw();
    showLoss(lab.losses[lab.losses.length - 1], "Loss");
    $("train-status").textContent = `epoch ${data.epoch}/${data.epochs} · ${data.elapsed.toFixed(2)} s`;
  } else if (name === "done") {
    showLoss(data.final_loss);
    const how = data.stopped ? `stopped after ${data.epochs_run} epochs` : `trained ${data.epochs_run} epochs`;
    const loss = data.initial_loss !== null && data.final_loss !== null
      ? ` · loss ${formatNumber(data.initial_loss, 6)} → ${formatNumber(data.final_loss, 6)}` : "";
    $("train-status").textContent = `${how} in ${data.elapsed.toFixed(2)} s${loss}`;
    if (data.predictions) renderPredictions(data.predictions, data.quality, null);
    scheduleDraw();
  } else if (name === "error") {
    error({ message: data.message, type: data.type });
    $("train-status").textContent = "training failed";
  }
}

async function stopTraining() {
  if (!lab.sessionId) return;
  $("stop").disabled = true;
  $("train-status").textContent = "stopping…";
  try {
    await api(`/api/lab/sessions/${lab.sessionId}/stop`, { method: "POST" });
  } catch (e) {
    error(e);
  }
}

// ------------------------------------------------------------------ save / load
async function currentBundle() {
  const answer = await api(`/api/lab/sessions/${lab.sessionId}/bundle?model_id=lab_model`);
  return answer.bundle;
}

async function loadBundle(bundle, data) {
  const body = { bundle };
  if (data !== undefined) body.data = data;
  const state = await api(`/api/lab/sessions/${lab.sessionId}/bundle`, { method: "POST", body });
  $("config-editor").value = state.config;
  if (data !== undefined) $("data-editor").value = data;
  lab.built = { config: state.config, data: $("data-editor").value, seed: seedValue() };
  render(state);
  lab.losses = [];
  scheduleDraw();
  showLoss(null);
}

async function withSession(work) {
  error(null);
  try {
    if (!lab.sessionId) await createSession();
    await work();
  } catch (e) {
    if (e.code === "session_not_found") {
      lab.sessionId = null;
      try {
        await createSession();
        await work();
        return;
      } catch (again) {
        error(again);
        return;
      }
    }
    error(e);
  }
}

function saveLocal() {
  return withSession(async () => {
    await syncNetwork();
    const bundle = await currentBundle();
    const saved = { bundle, data: $("data-editor").value, saved_at: new Date().toISOString() };
    localStorage.setItem(STORAGE_KEY, JSON.stringify(saved));
    $("storage-status").textContent = `saved ${(bundle.length / 1024).toFixed(1)} kB to this browser (${saved.saved_at})`;
  });
}

function loadLocal() {
  return withSession(async () => {
    const text = localStorage.getItem(STORAGE_KEY);
    if (!text) throw new Error("nothing is saved in this browser yet: press “Save to browser” first");
    const saved = JSON.parse(text);
    await loadBundle(saved.bundle, saved.data);
    $("storage-status").textContent = `loaded the network saved ${saved.saved_at}`;
  });
}

function download() {
  return withSession(async () => {
    await syncNetwork();
    const bundle = await currentBundle();
    const url = URL.createObjectURL(new Blob([bundle], { type: "application/json" }));
    const a = document.createElement("a");
    a.href = url;
    a.download = "loom-model.json";
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 1000);
    $("storage-status").textContent = `downloaded loom-model.json (${(bundle.length / 1024).toFixed(1)} kB)`;
  });
}

function upload(event) {
  const file = event.target.files[0];
  if (!file) return;
  return withSession(async () => {
    const bundle = await file.text();
    await loadBundle(bundle, undefined);
    $("storage-status").textContent = `loaded ${file.name}`;
  }).finally(() => {
    event.target.value = "";
  });
}

// ------------------------------------------------------------------ start
async function start() {
  watchServerStatus($("server-status"));
  const payload = await api("/api/lab/presets");
  lab.presets = payload.presets;
  for (const p of payload.presets) $("preset").append(new Option(p.title, p.name));
  for (const name of payload.losses) $("loss").append(new Option(name, name));
  for (const name of payload.optimizers) $("optimizer").append(new Option(name, name));
  $("preset").value = payload.default;
  applyPreset(payload.default);
  $("preset").addEventListener("change", () => {
    applyPreset($("preset").value);
    withSession(() => syncNetwork({ rebuild: true }));
  });
  $("build").addEventListener("click", () => withSession(() => syncNetwork({ rebuild: true })));
  $("train").addEventListener("click", train);
  $("stop").addEventListener("click", stopTraining);
  $("save-local").addEventListener("click", saveLocal);
  $("load-local").addEventListener("click", loadLocal);
  $("download").addEventListener("click", download);
  $("upload").addEventListener("change", upload);
  window.addEventListener("resize", scheduleDraw);
  window.addEventListener("pagehide", () => {
    if (lab.sessionId) navigator.sendBeacon(`/api/lab/sessions/${lab.sessionId}/close`);
  });
  scheduleDraw();
  try {
    await createSession();
    document.body.dataset.ready = "true";
  } catch (e) {
    error(e);
    document.body.dataset.ready = "error";
  }
}

document.addEventListener("DOMContentLoaded", () => {
  start().catch((e) => error(e));
});
