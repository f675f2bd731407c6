// kernelscope explorer: plain JavaScript, no build step, no dependency.
// Every number shown comes from the JSON API (/openapi.json); nothing is computed here
// except colours. User text is only ever written with textContent, never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
  info: null, cell: null, lastOp: null, opTimer: null, opSeq: 0, drawnKey: null, clickStart: null,
  run: null, summary: null, kernels: {}, atlas: {}, probe: null, probeIndex: 0, atlasTimer: null,
};

// ---- helpers ---------------------------------------------------------------------------
async function api(method, url, body) {
  const options = { method, headers: {} };
  if (body !== undefined) {
    options.headers["content-type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const response = await fetch(url, options);
  let data = null;
  try { data = await response.json(); } catch (e) { data = null; }
  if (!response.ok) {
    const detail = data && typeof data.detail === "string" ? data.detail : response.statusText;
    throw new Error(detail);
  }
  return data;
}

function fmt(v) {
  if (v === null || v === undefined) return "";
  if (Number.isInteger(v)) return String(v);
  return String(Number(v.toPrecision(4)));
}

function paren(v) {
  const text = fmt(v);
  return text.startsWith("-") ? `(${text})` : text;
}

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
}

// diverging blue-white-red for t in [-1, 1]
function diverging(t) {
  t = Math.max(-1, Math.min(1, t || 0));
  const a = Math.round(255 * (1 - Math.abs(t)));
  return t >= 0 ? [255, a, a] : [a, a, 255];
}

function colourFor(v, lo, hi) {
  if (lo < 0) {
    const m = Math.max(Math.abs(lo), Math.abs(hi)) || 1;
    return diverging(v / m);
  }
  const t = hi > 0 ? v / hi : 0;
  const g = Math.round(60 + 195 * t);
  return [g, g, g];
}

function parseMatrix(text, name) {
  const rows = text.split(/[;\n]/).map((r) => r.trim()).filter((r) => r.length > 0);
  if (rows.length === 0) throw new Error(`${name}: no numbers; write rows like '1 2 3; 4 5 6'`);
  const matrix = rows.map((r, i) => r.split(/[\s,]+/).filter((t) => t.length > 0).map((t) => {
    const v = Number(t);
    if (!Number.isFinite(v)) throw new Error(`${name}: row ${i + 1}: '${t}' is not a number`);
    return v;
  }));
  matrix.forEach((row, i) => {
    if (row.length !== matrix[0].length) {
      throw new Error(`${name}: row ${i} has ${row.length} numbers but row 0 has ${matrix[0].length}; every row needs the same count`);
    }
  });
  return matrix;
}

function parseInts(text, name) {
  const parts = text.split(/[\s,]+/).filter((t) => t.length > 0).map(Number);
  if (parts.length === 0 || parts.some((v) => !Number.isInteger(v))) {
    throw new Error(`${name} must be an integer or 'a,b'; got '${text}'`);
  }
  return parts.length === 1 ? parts[0] : parts;
}

function parsePadding(text) {
  const t = text.trim();
  if (/^[a-z]+$/i.test(t)) return t.toLowerCase();
  return parseInts(t, "padding");
}

// A matrix as a CSS grid of cells; numbers written when they fit.
function drawGrid(container, matrix, opts = {}) {
  const rows = matrix.length, cols = rows ? matrix[0].length : 0;
  let lo = Infinity, hi = -Infinity;
  for (const r of matrix) for (const v of r) { if (v < lo) lo = v; if (v > hi) hi = v; }
  const numbers = rows <= 20 && cols <= 20;
  const size = numbers ? 38 : Math.max(4, Math.min(14, Math.floor(520 / Math.max(rows, cols))));
  container.style.gridTemplateColumns = `repeat(${cols}, ${size}px)`;
  container.style.gridAutoRows = `${size}px`;
  const cells = [];
  for (let i = 0; i < rows; i++) {
    for (let j = 0; j < cols; j++) {
      const v = matrix[i][j];
      const cell = el("div", "cell", numbers ? fmt(v) : undefined);
      const [r, g, b] = colourFor(v, lo, hi);
      cell.style.backgroundColor = `rgb(${r},${g},${b})`;
      cell.style.color = (0.3 * r + 0.59 * g + 0.11 * b) < 120 ? "#fff" : "#000";
      cell.dataset.row = String(i);
      cell.dataset.col = String(j);
      cell.title = `[${i}, ${j}] = ${fmt(v)}`;
      if (opts.isPad && opts.isPad(i, j)) cell.classList.add("pad");
      cells.push(cell);
    }
  }
  container.replaceChildren(...cells);
}

// ---- the operation ---------------------------------------------------------------------
function operationRequest() {
  const mode = document.querySelector("input[name=mode]:checked").value;
  const body = {
    input: parseMatrix($("in-input").value, "input"),
    kernel: parseMatrix($("in-kernel").value, "kernel"),
    stride: parseInts($("in-stride").value, "stride"),
    padding: parsePadding($("in-padding").value),
    padding_mode: $("in-padding-mode").value,
    pad_value: Number($("in-pad-value").value) || 0,
    dilation: parseInts($("in-dilation").value, "dilation"),
    mode,
  };
  const bias = $("in-bias").value.trim();
  if (bias !== "") {
    const b = Number(bias);
    if (!Number.isFinite(b)) throw new Error(`bias must be a number; got '${bias}'`);
    body.bias = b;
  }
  return body;
}

function operationKey(body) {
  const copy = Object.assign({}, body);
  delete copy.cell;
  return JSON.stringify(copy);
}

function scheduleOperation() {
  clearTimeout(state.opTimer);
  state.opTimer = setTimeout(runOperation, 120);
}

async function runOperation() {
  const seq = ++state.opSeq;
  let body;
  try {
    body = operationRequest();
  } catch (e) {
    $("op-error").textContent = e.message;
    $("op-grids").classList.add("stale");
    return;
  }
  if (state.cell) body.cell = state.cell;
  const started = performance.now();
  try {
    let result;
    try {
      result = await api("POST", "/api/operation", body);
    } catch (e) {
      if (!body.cell) throw e;
      delete body.cell;  // the selected cell left the new output: drop it
      state.cell = null;
      result = await api("POST", "/api/operation", body);
    }
    if (seq !== state.opSeq) return;  // a newer request is on its way
    $("op-error").textContent = "";
    $("op-grids").classList.remove("stale");
    const key = operationKey(body);
    const sameOperation = key === state.drawnKey;
    state.lastOp = result;
    if (sameOperation) {
      drawExplanation(result);  // a click: the grids stay, only the highlights and the trace change
    } else {
      drawOperation(result);
      state.drawnKey = key;
      $("op-grids").dataset.latencyMs = (performance.now() - started).toFixed(1);  // request + drawing
      if ($("in-backward").checked) runBackward(body);
    }
    if (state.clickStart !== null) {
      $("explain-panel").dataset.latencyMs = (performance.now() - state.clickStart).toFixed(1);
      state.clickStart = null;
    }
  } catch (e) {
    if (seq === state.opSeq) {
      $("op-error").textContent = e.message;
      $("op-grids").classList.add("stale");  // what is shown no longer matches the inputs
    }
  }
}

function drawOperation(result) {
  const [top, bottom, left, right] = result.padding;
  const hp = result.padded_input.length, wp = result.padded_input[0].length;
  const isPad = (i, j) => i < top || i >= hp - bottom || j < left || j >= wp - right;
  drawGrid($("grid-input"), result.padded_input, { isPad });
  const padded = result.padding.some((p) => p > 0);
  $("input-caption").textContent = padded
    ? `Input ${result.input_shape.join("x")}, padded to ${hp}x${wp} (hatched: padding)`
    : `Input ${result.input_shape.join("x")}`;
  drawGrid($("grid-kernel"), result.kernel);
  const convolve = result.mode === "convolve";
  $("flip-box").hidden = !convolve;
  $("kernel-caption").textContent = `Kernel K ${result.kernel.length}x${result.kernel[0].length}`;
  if (convolve) drawGrid($("grid-applied"), result.applied_kernel);
  drawGrid($("grid-output"), result.output);
  const name = convolve ? "convolution" : "cross-correlation";
  let caption = `Output ${result.output_shape.join("x")} (${name}, stride ${result.stride.join(",")}, dilation ${result.dilation.join(",")})`;
  if (convolve) caption += result.flip_identity ? "; checked: conv(I, K) = xcorr(I, flip(K))" : "";
  $("output-caption").textContent = caption;
  drawExplanation(result);
}

function drawExplanation(result) {
  const pos = result.position;
  $("explain-panel").hidden = !pos;
  if (!pos) return;
  for (const node of document.querySelectorAll("#grid-output .sel, #grid-input .hl")) node.classList.remove("sel", "hl");
  const [top, , left] = result.padding;
  const outCells = $("grid-output").children;
  const wOut = result.output_shape[1];
  outCells[pos.row * wOut + pos.col].classList.add("sel");
  const wp = result.padded_input[0].length;
  const inCells = $("grid-input").children;
  for (const r of pos.input_rows) for (const c of pos.input_cols) {
    const k = (r + top) * wp + (c + left);
    if (inCells[k]) inCells[k].classList.add("hl");
  }
  const term = pos.channels[0];
  $("explain-title").textContent = `out[${pos.row}, ${pos.col}]`;
  $("explain-where").textContent =
    `input rows ${pos.input_rows.join(", ")}; columns ${pos.input_cols.join(", ")} (negative or beyond the input: padding)`;
  const rows = [];
  const terms = [];
  for (let u = 0; u < term.window.length; u++) {
    for (let v = 0; v < term.window[u].length; v++) {
      const tr = el("tr");
      tr.append(el("td", "", fmt(term.window[u][v])), el("td", "", "\u00d7"), el("td", "", fmt(term.kernel[u][v])),
        el("td", "", "="), el("td", "", fmt(term.products[u][v])));
      rows.push(tr);
      terms.push(`${paren(term.window[u][v])}\u00b7${paren(term.kernel[u][v])}`);
    }
  }
  $("explain-rows").replaceChildren(...rows);
  $("explain-formula").textContent = `${terms.join(" + ")} = ${fmt(term.sum)}`;
  $("explain-sum").textContent = fmt(term.sum);
  $("explain-bias").textContent = pos.bias === null ? "" : `, plus bias ${fmt(pos.bias)}`;
  $("explain-total").textContent = fmt(pos.total);
  $("explain-check").textContent = result.position_agrees ? "(equals the engine's output)" : "(DIFFERS from the engine's output)";
}

async function runBackward(body) {
  const request = Object.assign({}, body);
  delete request.cell;
  delete request.bias;
  $("backward-panel").hidden = false;
  try {
    const trace = await api("POST", "/api/backward", request);
    $("backward-error").textContent = "";
    drawGrid($("grid-grad-out"), trace.grad_output);
    drawGrid($("grid-grad-kernel"), trace.kernel_grad);
    drawGrid($("grid-grad-input"), trace.input_grad);
    $("grad-bias").textContent = trace.bias_grad.map(fmt).join(", ");
    for (const cell of $("grid-grad-kernel").children) {
      cell.addEventListener("click", () => explainKernelGrad(trace, Number(cell.dataset.row), Number(cell.dataset.col)));
    }
    $("grad-explain").textContent = "";
  } catch (e) {
    $("backward-error").textContent = e.message;
    for (const id of ["grid-grad-out", "grid-grad-kernel", "grid-grad-input"]) $(id).replaceChildren();
    $("grad-bias").textContent = "";
  }
}

// dL/dK[u, v] = sum over output pixels of g[i, j] times the input value that tap (u, v) saw there
function explainKernelGrad(trace, u, v) {
  const kh = trace.kernel_grad.length, kw = trace.kernel_grad[0].length;
  // convolution slides flip(K): tap (u, v) of K is tap (kh-1-u, kw-1-v) of what slid
  const [a, b] = trace.mode === "convolve" ? [kh - 1 - u, kw - 1 - v] : [u, v];
  const terms = trace.weighted_windows.map((w) => `${paren(w.grad)}\u00b7${paren(w.window[a][b])}`);
  for (const cell of $("grid-grad-kernel").children) {
    cell.classList.toggle("sel", Number(cell.dataset.row) === u && Number(cell.dataset.col) === v);
  }
  $("grad-explain").textContent = `dL/dK[${u}, ${v}] = sum over output pixels of g \u00b7 the input under tap ` +
    `(${a}, ${b}): ${terms.join(" + ")} = ${fmt(trace.kernel_grad[u][v])}`;
}

function matrixText(matrix) {
  return matrix.map((r) => r.map(fmt).join(" ")).join(";\n");
}

async function loadSampleImage() {
  try {
    const name = encodeURIComponent($("sample-image").value);
    const size = Number($("sample-size").value) || 24;
    const image = await api("GET", `/api/images/${name}?size=${size}`);
    $("in-input").value = matrixText(image.matrix);
    state.cell = null;
    runOperation();
  } catch (e) {
    $("op-error").textContent = e.message;
  }
}

async function loadBankKernel() {
  try {
    const name = encodeURIComponent($("bank-kernel").value);
    const kernel = await api("GET", `/api/bank/${name}`);
    $("in-kernel").value = matrixText(kernel.matrix);
    $("kernel-note").textContent = kernel.note;
    state.cell = null;
    runOperation();
  } catch (e) {
    $("op-error").textContent = e.message;
  }
}

// ---- runs -----------------------------------------------------------------------------
function drawArray(canvas, data, offset, h, w, channels, lo, hi) {
  // one (C, h, w) block of a flat array: C == 3 as RGB around grey, else channel mean, diverging
  canvas.width = w;
  canvas.height = h;
  const ctx = canvas.getContext("2d");
  const img = ctx.createImageData(w, h);
  const m = Math.max(Math.abs(lo), Math.abs(hi)) || 1;
  for (let i = 0; i < h; i++) {
    for (let j = 0; j < w; j++) {
      let rgb;
      if (channels === 3) {
        rgb = [0, 1, 2].map((c) => Math.round(255 * Math.max(0, Math.min(1, 0.5 + data[offset + (c * h + i) * w + j] / (2 * m)))));
      } else {
        let s = 0;
        for (let c = 0; c < channels; c++) s += data[offset + (c * h + i) * w + j];
        rgb = diverging(s / channels / m);
      }
      const p = 4 * (i * w + j);
      img.data[p] = rgb[0]; img.data[p + 1] = rgb[1]; img.data[p + 2] = rgb[2]; img.data[p + 3] = 255;
    }
  }
  ctx.putImageData(img, 0, 0);
}

function drawImage(canvas, data, offset, h, w, channels) {
  // a raw image in [0, 1]: grey or RGB
  canvas.width = w;
  canvas.height = h;
  const ctx = canvas.getContext("2d");
  const img = ctx.createImageData(w, h);
  for (let i = 0; i < h; i++) {
    for (let j = 0; j < w; j++) {
      const p = 4 * (i * w + j);
      for (let c = 0; c < 3; c++) {
        const cc = channels === 3 ? c : 0;
        img.data[p + c] = Math.round(255 * Math.max(0, Math.min(1, data[offset + (cc * h + i) * w + j])));
      }
      img.data[p + 3] = 255;
    }
  }
  ctx.putImageData(img, 0, 0);
}

function currentEpoch() {
  return state.summary.epochs[Number($("epoch-slider").value)];
}

function currentLayer() {
  return $("layer-select").value;
}

async function loadRuns() {
  const runs = await api("GET", "/api/runs");
  const select = $("run-select");
  select.replaceChildren(...runs.map((r) => {
    const option = el("option", "", `${r.id}: ${r.name} (${r.model} on ${r.dataset}, ${r.status})`);
    option.value = String(r.id);
    return option;
  }));
  if (runs.length === 0) {
    $("run-info").textContent = "No run is served: start the explorer with `kernelscope serve RUN_DIR`.";
    return;
  }
  await selectRun(Number(select.value));
}

async function selectRun(id) {
  state.run = id;
  state.kernels = {};
  state.atlas = {};
  state.probeIndex = 0;
  try {
    const summary = await api("GET", `/api/runs/${id}`);
    state.summary = summary;
    $("layer-select").replaceChildren(...summary.conv_layers.map((name) => {
      const option = el("option", "", `${name} ${(summary.layer_shapes[name] || []).join("x")}`);
      option.value = name;
      return option;
    }));
    const slider = $("epoch-slider");
    slider.max = String(Math.max(0, summary.epochs.length - 1));
    slider.value = slider.max;
    const last = summary.metrics.length ? summary.metrics[summary.metrics.length - 1] : null;
    $("run-info").textContent = `${summary.model} on ${summary.dataset}, ${summary.status}, epochs recorded: ` +
      `${summary.epochs.join(", ")}` + (last && last.test_acc != null ? `; final test accuracy ${fmt(last.test_acc)}` : "");
    $("run-error").textContent = "";
    drawCurves(summary.metrics);
    await Promise.all([showKernels(), loadProbe()]);
  } catch (e) {
    $("run-error").textContent = e.message;
  }
}

async function getKernels(layer, epoch) {
  const key = `${layer}@${epoch}`;
  if (!state.kernels[key]) {
    state.kernels[key] = api("GET", `/api/runs/${state.run}/kernels?layer=${encodeURIComponent(layer)}&epoch=${epoch}`);
  }
  try {
    return await state.kernels[key];
  } catch (e) {
    delete state.kernels[key];
    throw e;
  }
}

async function showKernels() {
  if (!state.summary || state.summary.epochs.length === 0) return;
  const layer = currentLayer(), epoch = currentEpoch();
  $("epoch-label").textContent = `${epoch} of ${state.summary.epochs[state.summary.epochs.length - 1]}` +
    (epoch === 0 ? " (initialisation)" : "");
  try {
    const response = await getKernels(layer, epoch);
    if (layer !== currentLayer() || epoch !== currentEpoch()) return;  // the slider moved on
    drawKernels(response);
    $("run-error").textContent = "";
  } catch (e) {
    $("run-error").textContent = e.message;
  }
  loadFeatureMaps();
  clearTimeout(state.atlasTimer);
  state.atlasTimer = setTimeout(loadAtlas, 300);
}

function drawKernels(response) {
  const [o, c, kh, kw] = response.kernels.shape;
  const data = response.kernels.data;
  const perKernel = $("kernel-scale").value === "kernel";
  const block = c * kh * kw;
  const zoom = Math.max(3, Math.floor(56 / Math.max(kh, kw)));
  const cells = [];
  for (let k = 0; k < o; k++) {
    let lo = response.kernels.vmin, hi = response.kernels.vmax;
    if (perKernel) {
      lo = Infinity; hi = -Infinity;
      for (let t = 0; t < block; t++) { const v = data[k * block + t]; if (v < lo) lo = v; if (v > hi) hi = v; }
    }
    const canvas = el("canvas");
    drawArray(canvas, data, k * block, kh, kw, c, lo, hi);
    canvas.style.width = `${kw * zoom}px`;
    canvas.style.height = `${kh * zoom}px`;
    const wrap = el("div", "kcell");
    wrap.dataset.index = String(k);
    wrap.append(canvas, el("span", "klabel", String(k)));
    wrap.addEventListener("mouseenter", (ev) => showTooltip(k, ev));
    wrap.addEventListener("mousemove", moveTooltip);
    wrap.addEventListener("mouseleave", () => { $("kernel-tooltip").hidden = true; });
    cells.push(wrap);
  }
  const grid = $("kernel-grid");
  grid.replaceChildren(...cells);
  grid.dataset.epoch = String(response.epoch);
  grid.dataset.layer = response.layer;
  $("kernels-note").textContent = `${response.layer}, epoch ${response.epoch}: ${o} kernels of ${c}x${kh}x${kw}` +
    (c === 3 ? "; RGB: grey is 0, each colour channel's weight brightens or darkens its colour"
      : (c > 1 ? ` (mean over ${c} input channels)` : "") + "; red positive, blue negative") +
    (response.note ? `; ${response.note}` : "");
  markAtlasClasses();
}

function atlasKey() {
  return `${currentLayer()}@${currentEpoch()}`;
}

async function loadAtlas() {
  if (!state.summary || state.summary.epochs.length === 0) return;
  const key = atlasKey(), layer = currentLayer(), epoch = currentEpoch();
  if (state.atlas[key] && !(state.atlas[key] instanceof Promise)) { drawAtlas(state.atlas[key]); return; }
  $("atlas-status").textContent = `atlas of ${layer} at epoch ${epoch}: computing (classical matches against null controls)...`;
  try {
    const pending = state.atlas[key] || api("GET", `/api/runs/${state.run}/atlas?layer=${encodeURIComponent(layer)}&epoch=${epoch}`);
    state.atlas[key] = pending;
    const result = await pending;
    state.atlas[key] = result;
    if (key === atlasKey()) drawAtlas(result);
  } catch (e) {
    delete state.atlas[key];
    if (key === atlasKey()) $("atlas-status").textContent = `atlas: ${e.message}`;
  }
}

function drawAtlas(result) {
  $("atlas-status").textContent = `atlas of ${result.layer} at epoch ${result.epoch}: a class is earned above the controls' ` +
    `p${fmt(result.percentile)} (${result.n_null} null kernels each; ${fmt(result.seconds)} s). Hover a kernel for its match.`;
  const rows = Object.keys(result.fractions).map((name) => {
    const tr = el("tr");
    const control = (n) => (result.control_fractions[n] && result.control_fractions[n][name] !== undefined
      ? fmt(result.control_fractions[n][name]) : "-");
    tr.append(el("td", "", name), el("td", "", fmt(result.fractions[name])), el("td", "", control("random")),
      el("td", "", control("init")));
    return tr;
  });
  $("atlas-rows").replaceChildren(...rows);
  $("atlas-table").hidden = false;
  markAtlasClasses();
}

function markAtlasClasses() {
  const result = state.atlas[atlasKey()];
  if (!result || result instanceof Promise) return;
  for (const wrap of $("kernel-grid").children) {
    const record = result.kernels[Number(wrap.dataset.index)];
    if (record) wrap.classList.add(record.kernel_class.replace(/[^a-z-]/g, ""));
  }
}

function showTooltip(k, ev) {
  const tip = $("kernel-tooltip");
  const result = state.atlas[atlasKey()];
  let text = `kernel ${k}`;
  if (!result || result instanceof Promise) {
    text += "\natlas: computing...";
  } else {
    const r = result.kernels[k];
    text += `\nclass: ${r.kernel_class}` +
      `\nbest match: ${r.best_name} (${r.best_family}${r.best_params ? ", " + r.best_params : ""})` +
      `\nscore ${fmt(r.best_score)}`;
    const lines = Object.entries(r.scores).filter(([, v]) => v !== null).map(([name, v]) => {
      const t = result.thresholds[name];
      return `${name}: ${fmt(v)} vs control p${fmt(result.percentile)} ${t === null || t === undefined ? "-" : fmt(t)}` +
        (t !== null && t !== undefined && v > t ? "  (above)" : "");
    });
    text += "\n" + lines.join("\n");
  }
  tip.textContent = text;
  tip.hidden = false;
  moveTooltip(ev);
}

function moveTooltip(ev) {
  const tip = $("kernel-tooltip");
  tip.style.left = `${ev.clientX + 14}px`;
  tip.style.top = `${ev.clientY + 14}px`;
}

async function loadProbe() {
  try {
    const probe = await api("GET", `/api/runs/${state.run}/probe`);
    state.probe = probe;
    const [p, c, h, w] = probe.images.shape;
    const zoom = Math.max(1, Math.floor(48 / Math.max(h, w)));
    const canvases = [];
    for (let i = 0; i < p; i++) {
      const canvas = el("canvas");
      drawImage(canvas, probe.images.data, i * c * h * w, h, w, c);
      canvas.style.width = `${w * zoom}px`;
      canvas.style.height = `${h * zoom}px`;
      canvas.title = `probe ${i}: ${probe.label_names[i]}`;
      if (i === state.probeIndex) canvas.classList.add("sel");
      canvas.addEventListener("click", () => {
        state.probeIndex = i;
        for (const other of $("probe-strip").children) other.classList.remove("sel");
        canvas.classList.add("sel");
        loadFeatureMaps();
      });
      canvases.push(canvas);
    }
    $("probe-strip").replaceChildren(...canvases);
  } catch (e) {
    $("maps-caption").textContent = `probe images: ${e.message}`;
  }
}

async function loadFeatureMaps() {
  if (!state.summary || state.summary.feature_map_epochs.length === 0) {
    $("maps-caption").textContent = "this run recorded no feature maps";
    return;
  }
  const layer = currentLayer(), epoch = currentEpoch();
  if (!state.summary.feature_map_epochs.includes(epoch)) {
    $("maps-caption").textContent = `no feature maps recorded at epoch ${epoch}`;
    $("maps-grid").replaceChildren();
    return;
  }
  try {
    const maps = await api("GET", `/api/runs/${state.run}/featuremaps?layer=${encodeURIComponent(layer)}` +
      `&epoch=${epoch}&probe=${state.probeIndex}`);
    if (layer !== currentLayer() || epoch !== currentEpoch()) return;
    const [o, h, w] = maps.maps.shape;
    const zoom = Math.max(1, Math.floor(64 / Math.max(h, w)));
    const cells = [];
    for (let k = 0; k < o; k++) {
      const canvas = el("canvas");
      drawArray(canvas, maps.maps.data, k * h * w, h, w, 1, maps.maps.vmin, maps.maps.vmax);
      canvas.style.width = `${w * zoom}px`;
      canvas.style.height = `${h * zoom}px`;
      const wrap = el("div", "kcell");
      wrap.append(canvas, el("span", "klabel", String(k)));
      cells.push(wrap);
    }
    $("maps-grid").replaceChildren(...cells);
    $("maps-caption").textContent = `${maps.layer} at epoch ${maps.epoch}, probe ${maps.probe} ` +
      `(label ${maps.label_name}): ${o} maps of ${h}x${w}, one colour scale for all (max |value| ` +
      `${fmt(Math.max(Math.abs(maps.maps.vmin), Math.abs(maps.maps.vmax)))})`;
  } catch (e) {
    $("maps-caption").textContent = `feature maps: ${e.message}`;
  }
}

function drawCurves(metrics) {
  const canvas = $("curves");
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  ctx.font = "12px sans-serif";
  if (!metrics.length) { ctx.fillText("no completed epoch yet", 20, 30); return; }
  const panels = [["loss", ["train_loss", "test_loss"]], ["accuracy", ["train_acc", "test_acc"]]];
  const colours = { train_loss: "#1f77b4", test_loss: "#ff7f0e", train_acc: "#1f77b4", test_acc: "#ff7f0e" };
  const pw = canvas.width / 2, ph = canvas.height, pad = 36;
  panels.forEach(([title, keys], p) => {
    const x0 = p * pw + pad, x1 = (p + 1) * pw - 12, y0 = ph - 28, y1 = 22;
    const values = metrics.flatMap((m) => keys.map((k) => m[k])).filter((v) => typeof v === "number");
    if (!values.length) return;
    let lo = Math.min(...values), hi = Math.max(...values);
    if (hi === lo) { hi += 0.5; lo -= 0.5; }
    const epochs = metrics.map((m) => m.epoch);
    const e0 = Math.min(...epochs), e1 = Math.max(...epochs) === e0 ? e0 + 1 : Math.max(...epochs);
    const sx = (e) => x0 + (x1 - x0) * (e - e0) / (e1 - e0);
    const sy = (v) => y0 - (y0 - y1) * (v - lo) / (hi - lo);
    ctx.strokeStyle = "#999";
    ctx.beginPath(); ctx.moveTo(x0, y1); ctx.lineTo(x0, y0); ctx.lineTo(x1, y0); ctx.stroke();
    ctx.fillStyle = "#000";
    ctx.fillText(title, x0, 14);
    ctx.fillText(fmt(hi), 2 + p * pw, y1 + 4);
    ctx.fillText(fmt(lo), 2 + p * pw, y0);
    ctx.fillText(`epoch ${e0}`, x0, ph - 8);
    ctx.fillText(`${e1}`, x1 - 14, ph - 8);
    keys.forEach((key, i) => {
      ctx.strokeStyle = colours[key];
      ctx.fillStyle = colours[key];
      ctx.beginPath();
      let started = false;
      for (const m of metrics) {
        if (typeof m[key] !== "number") continue;
        const x = sx(m.epoch), y = sy(m[key]);
        if (started) ctx.lineTo(x, y); else ctx.moveTo(x, y);
        started = true;
        ctx.fillRect(x - 2, y - 2, 4, 4);
      }
      ctx.stroke();
      ctx.fillText(key.replace("_", " "), x1 - 70, y1 + 14 * (i + 1));
    });
  });
}

function drawCrop(canvas, data, offset, h, w, channels) {
  // a crop in [0, 1]; -1 marks pixels outside the image (drawn light violet)
  canvas.width = w;
  canvas.height = h;
  const ctx = canvas.getContext("2d");
  const img = ctx.createImageData(w, h);
  for (let i = 0; i < h; i++) {
    for (let j = 0; j < w; j++) {
      const p = 4 * (i * w + j);
      const first = data[offset + i * w + j];
      for (let c = 0; c < 3; c++) {
        const v = data[offset + ((channels === 3 ? c : 0) * h + i) * w + j];
        img.data[p + c] = first < 0 ? [225, 210, 240][c] : Math.round(255 * Math.max(0, Math.min(1, v)));
      }
      img.data[p + 3] = 255;
    }
  }
  ctx.putImageData(img, 0, 0);
}

async function loadPatches() {
  if (!state.summary || state.summary.epochs.length === 0) return;
  const layer = currentLayer(), epoch = currentEpoch();
  $("patches-status").textContent = `top patches of ${layer} at epoch ${epoch}: computing (a pass over the test images)...`;
  $("patches-grid").replaceChildren();
  try {
    const result = await api("GET", `/api/runs/${state.run}/patches?layer=${encodeURIComponent(layer)}&epoch=${epoch}&k=6`);
    const [channels, k, cin, rh, rw] = result.crops.shape;
    const zoom = Math.max(1, Math.floor(40 / Math.max(rh, rw)));
    const rows = [];
    for (let c = 0; c < channels; c++) {
      const row = el("div", "patch-row");
      row.append(el("span", "klabel", `ch ${c}`));
      for (let t = 0; t < k; t++) {
        const canvas = el("canvas");
        drawCrop(canvas, result.crops.data, ((c * k + t) * cin) * rh * rw, rh, rw, cin);
        canvas.style.width = `${rw * zoom}px`;
        canvas.style.height = `${rh * zoom}px`;
        canvas.title = `channel ${c}: test image ${result.image_index[c][t]}, max activation ${fmt(result.values[c][t])}`;
        row.append(canvas);
      }
      rows.push(row);
    }
    $("patches-grid").replaceChildren(...rows);
    $("patches-status").textContent = `${result.layer} at epoch ${result.epoch}: each channel's ${result.k} most ` +
      `activating of ${result.n_images} ${result.split} images, cropped to its ${rh}x${rw} receptive field ` +
      `(violet: outside the image; ${fmt(result.seconds)} s)`;
  } catch (e) {
    $("patches-status").textContent = `top patches: ${e.message}`;
  }
}

// ---- start -----------------------------------------------------------------------------
function showTab(name) {
  for (const view of ["op", "run", "net"]) {
    $(`view-${view}`).hidden = view !== name;
    $(`tab-${view}`).classList.toggle("active", view === name);
  }
  if (name === "net") networkShown();  // network.js: the network view loads when first shown
}

async function start() {
  $("tab-op").addEventListener("click", () => showTab("op"));
  $("tab-run").addEventListener("click", () => showTab("run"));
  $("tab-net").addEventListener("click", () => showTab("net"));
  for (const id of ["in-input", "in-kernel", "in-stride", "in-padding", "in-pad-value", "in-dilation", "in-bias"]) {
    $(id).addEventListener("input", () => { state.cell = null; scheduleOperation(); });
  }
  $("grid-output").addEventListener("click", (ev) => {
    const cell = ev.target.closest(".cell");
    if (!cell) return;
    state.cell = [Number(cell.dataset.row), Number(cell.dataset.col)];
    state.clickStart = performance.now();
    runOperation();
  });
  $("in-padding-mode").addEventListener("change", scheduleOperation);
  for (const radio of document.querySelectorAll("input[name=mode]")) radio.addEventListener("change", scheduleOperation);
  $("in-backward").addEventListener("change", () => {
    $("backward-panel").hidden = !$("in-backward").checked;
    if (!$("in-backward").checked) return;
    try {
      runBackward(operationRequest());
    } catch (e) {
      $("backward-error").textContent = e.message;
    }
  });
  $("load-image").addEventListener("click", loadSampleImage);
  $("load-kernel").addEventListener("click", loadBankKernel);
  $("run-select").addEventListener("change", () => selectRun(Number($("run-select").value)));
  $("run-reload").addEventListener("click", () => { if (state.run !== null) selectRun(state.run); });
  $("layer-select").addEventListener("change", showKernels);
  $("epoch-slider").addEventListener("input", showKernels);
  $("kernel-scale").addEventListener("change", showKernels);
  $("patches-button").addEventListener("click", loadPatches);
  try {
    const info = await api("GET", "/api/info");
    state.info = info;
    $("version").textContent = `kernelscope ${info.version}`;
    $("in-padding-mode").replaceChildren(...info.padding_modes.map((m) => el("option", "", m)));
    $("sample-image").replaceChildren(...info.sample_images.map((m) => el("option", "", m)));
    $("bank-kernel").replaceChildren(...info.bank.map((k) => {
      const option = el("option", "", `${k.name} (${k.family})`);
      option.value = k.name;
      return option;
    }));
    for (const node of document.querySelectorAll(".lim-input")) node.textContent = String(info.limits.input);
    for (const node of document.querySelectorAll(".lim-kernel")) node.textContent = String(info.limits.kernel);
  } catch (e) {
    $("op-error").textContent = e.message;
  }
  if (location.hash === "#runs") showTab("run");
  if (location.hash === "#network") showTab("net");
  await runOperation();
  try {
    await loadRuns();
  } catch (e) {
    $("run-error").textContent = e.message;
  }
  startNetwork();
  document.body.dataset.ready = "1";
}

start();
