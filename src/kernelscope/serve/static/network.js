// kernelscope explorer, the network view: every conv layer's feature maps for one image; click a cell for its
// explanation (windows, kernel slices, products, sums, bias, total, value after the activation, and the check
// against the network's own output); a channel's atlas match, top patches, template, visualisation, projections.
// Uses app.js's helpers ($, api, el, fmt, diverging, drawGrid, drawImage, drawCrop, drawArray) at call time: it is
// loaded before app.js, whose start() calls startNetwork() and networkShown(). Text only via textContent.
"use strict";

const net = { list: [], id: null, image: null, epoch: null, maps: null, cell: null, channel: null, seq: 0,
              partSeq: 0, loadStart: null, render: false, analyse: false, started: false };

function num6(v) {
  if (v === null || v === undefined) return "n/a";
  return String(Number(Number(v).toPrecision(6)));
}

function bytesOf(b64) {
  const text = atob(b64);
  const out = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) out[i] = text.charCodeAt(i);
  return out;
}

function drawBytesMap(canvas, bytes, offset, h, w) {
  // a map quantised 0..255 over [-scale, scale]: diverging blue-white-red, 128 ~ 0
  canvas.width = w;
  canvas.height = h;
  const ctx = canvas.getContext("2d");
  const img = ctx.createImageData(w, h);
  for (let p = 0; p < h * w; p++) {
    const [r, g, b] = diverging(bytes[offset + p] / 127.5 - 1);
    img.data[4 * p] = r; img.data[4 * p + 1] = g; img.data[4 * p + 2] = b; img.data[4 * p + 3] = 255;
  }
  ctx.putImageData(img, 0, 0);
}

function drawBytesImage(canvas, bytes, c, h, w) {
  const data = Array.from(bytes, (v) => v / 255);
  drawImage(canvas, data, 0, h, w, c);
}

function netQuery(extra) {
  const q = new URLSearchParams({ image: net.image, ...extra });
  if (net.epoch !== null) q.set("epoch", String(net.epoch));
  return q.toString();
}

async function loadNetworks() {
  net.list = await api("GET", "/api/network");
  $("net-select").replaceChildren(...net.list.map((n) => {
    const option = el("option", "", n.label.includes(`(${n.kind})`) ? `${n.id}: ${n.label}` : `${n.id}: ${n.label} (${n.kind})`);
    option.value = String(n.id);
    return option;
  }));
  if (net.list.length === 0) {
    $("net-status").textContent = "no network: start `kernelscope serve RUN_OR_SOURCE` (a run, a model file, or a pretrained name such as onet)";
    return;
  }
  await selectNetwork(net.list[0].id);
}

async function selectNetwork(id) {
  const info = net.list.find((n) => n.id === id);
  net.id = id;
  $("net-select").value = String(id);
  $("net-image").replaceChildren(...info.images.map((name) => el("option", "", name)));
  net.image = info.images[0] || null;
  const epochs = info.epochs;
  $("net-epoch-box").hidden = epochs.length === 0;
  if (epochs.length) {
    $("net-epoch").min = "0";
    $("net-epoch").max = String(epochs.length - 1);
    $("net-epoch").value = String(epochs.length - 1);
    net.epoch = epochs[epochs.length - 1];
    $("net-epoch-label").textContent = `${net.epoch} (checkpoints: ${epochs.join(", ")})`;
  } else {
    net.epoch = null;
  }
  $("net-info").textContent = `input ${info.input_shape.join("x")} (C x H x W); ${info.conv_layers.length} conv layers. ${info.note}`;
  $("net-maps").replaceChildren();
  $("cell-panel").hidden = true;
  $("chan-panel").hidden = true;
  net.cell = null;
  net.channel = null;
  net.partSeq++;  // a channel's analyses still being asked for belong to the previous network
  net.analyse = false;  // and they are asked for again on this one (their cost differs from network to network)
  net.render = false;
  if (info.kind === "run" && epochs.length === 0) return;  // the note says why: no weights
  if (net.image) await loadMaps();
}

async function loadMaps() {
  const seq = ++net.seq;
  net.loadStart = performance.now();
  $("net-status").textContent = "computing the feature maps...";
  $("net-error").textContent = "";
  const max = Math.max(1, Math.min(64, Number($("net-max-channels").value) || 8));
  try {
    const maps = await api("GET", `/api/network/${net.id}/maps?${netQuery({ max_channels: String(max) })}`);
    if (seq !== net.seq) return;
    net.maps = maps;
    drawMaps(maps);
    const ms = performance.now() - net.loadStart;
    $("net-maps").dataset.loadMs = String(Math.round(ms));
    $("net-status").textContent = `${maps.label}, ${maps.image_note}` + (maps.epoch !== null ? `, epoch ${maps.epoch}` : "") +
      `: ${maps.layers.length} conv layers in ${fmt(ms / 1000)} s (server ${fmt(maps.seconds)} s). ${maps.note}`;
    if (net.cell) loadCell(net.cell.layer, net.cell.channel, net.cell.row, net.cell.col, false);
  } catch (e) {
    if (seq !== net.seq) return;
    $("net-error").textContent = e.message;
    $("net-status").textContent = "";
  }
}

// Enlarge a canvas of h x w pixels by a whole factor so that its longer side is about `box` CSS pixels.
function fitCanvas(canvas, h, w, box) {
  const zoom = Math.max(1, Math.floor(box / Math.max(h, w)));
  canvas.style.width = `${w * zoom}px`;
  canvas.style.height = `${h * zoom}px`;
}

function drawMaps(maps) {
  const [c, h, w] = maps.input.shape;
  const input = el("canvas");
  drawBytesImage(input, bytesOf(maps.input.data), c, h, w);
  fitCanvas(input, h, w, 112);
  const inputCol = el("div", "net-layer");
  inputCol.append(el("div", "net-title", "input"), el("div", "muted small", `${c}x${h}x${w}`), input);
  const columns = [inputCol];
  for (const layer of maps.layers) {
    const [lc, lh, lw] = layer.shape;
    const bytes = bytesOf(layer.data);
    const col = el("div", "net-layer");
    col.dataset.layer = layer.layer;
    const title = el("div", "net-title", layer.layer);
    const sub = el("div", "muted small", `${lc}x${lh}x${lw}; ${layer.sample}`);
    sub.title = `read after the activation: ${layer.read_at}; shown: the conv's own output, |value| <= ${fmt(layer.scale)}`;
    col.append(title, sub);
    layer.channels.forEach((channel, k) => {
      const canvas = el("canvas", "net-map");
      drawBytesMap(canvas, bytes, k * lh * lw, lh, lw);
      fitCanvas(canvas, lh, lw, 72);
      canvas.dataset.layer = layer.layer;
      canvas.dataset.channel = String(channel);
      canvas.dataset.h = String(lh);
      canvas.dataset.w = String(lw);
      canvas.title = `${layer.layer} channel ${channel}: click a cell`;
      const box = el("div", "kcell");
      box.append(canvas, el("span", "klabel", `ch ${channel}`));
      col.append(box);
    });
    columns.push(col);
  }
  $("net-maps").replaceChildren(...columns);
}

function onMapClick(ev) {
  const canvas = ev.target.closest("canvas.net-map");
  if (!canvas) return;
  const rect = canvas.getBoundingClientRect();
  const h = Number(canvas.dataset.h), w = Number(canvas.dataset.w);
  const row = Math.min(h - 1, Math.max(0, Math.floor((ev.clientY - rect.top) / rect.height * h)));
  const col = Math.min(w - 1, Math.max(0, Math.floor((ev.clientX - rect.left) / rect.width * w)));
  for (const c of document.querySelectorAll("canvas.net-map.sel")) c.classList.remove("sel");
  canvas.classList.add("sel");
  loadCell(canvas.dataset.layer, Number(canvas.dataset.channel), row, col, true);
}

async function loadCell(layer, channel, row, col, withChannel) {
  net.cell = { layer, channel, row, col };
  const started = performance.now();
  $("cell-panel").hidden = false;
  $("cell-status").textContent = `explaining ${layer} channel ${channel} at (${row}, ${col})...`;
  $("cell-panel").dataset.ready = "0";
  try {
    const cell = await api("GET", `/api/network/${net.id}/cell?${netQuery({ layer, channel: String(channel), row: String(row), col: String(col) })}`);
    drawCell(cell);
    const ms = performance.now() - started;
    $("cell-panel").dataset.clickMs = String(Math.round(ms));
    $("cell-status").textContent = `explained in ${fmt(ms / 1000)} s`;
    $("cell-panel").dataset.ready = "1";
  } catch (e) {
    $("cell-status").textContent = e.message;
  }
  if (withChannel) offerChannel(layer, channel);
}

function offerChannel(layer, channel) {
  // the channel's analyses are passes over a data set: they start when asked for (or at once once asked for)
  if (net.analyse) { loadChannel(layer, channel); return; }
  net.partSeq++;
  net.channel = { layer, channel };
  $("chan-panel").hidden = false;
  $("chan-title").textContent = `${layer}, channel ${channel}` + (net.epoch !== null ? ` at epoch ${net.epoch}` : "");
  for (const id of ["chan-atlas", "chan-patches", "chan-template", "chan-vis", "chan-proj"]) $(id).replaceChildren();
  for (const id of ["chan-atlas-status", "chan-patches-status", "chan-template-status", "chan-vis-status"]) $(id).textContent = "";
}

function drawCell(cell) {
  $("cell-title").textContent = `${cell.layer}, output channel ${cell.channel}, cell (${cell.row}, ${cell.col}) ` +
    `of ${cell.output_shape.join("x")}`;
  const pads = cell.padding_mask.flat().some((v) => v);
  $("cell-where").textContent = `kernel ${cell.kernel_size.join("x")}, stride ${cell.stride.join(",")}, ` +
    `dilation ${cell.dilation.join(",")}, padding ${cell.padding.join(",")} (top, bottom, left, right; ${cell.padding_mode}), ` +
    `groups ${cell.groups} (this channel reads input channels ${cell.channels[0].channel}..${cell.channels[cell.channels.length - 1].channel}); ` +
    `input rows ${cell.input_rows.join(", ")}, cols ${cell.input_cols.join(", ")}` +
    (pads ? " (outside 0..H-1 / 0..W-1: padding, hatched)" : "") + (cell.notes.length ? `. ${cell.notes.join("; ")}` : "");
  const order = cell.channels.map((t, i) => i).sort((a, b) => Math.abs(cell.channels[b].sum) - Math.abs(cell.channels[a].sum));
  const shown = order.slice(0, 6);
  const rows = [];
  const isPad = (i, j) => cell.padding_mask[i][j];
  for (const i of shown) {
    const t = cell.channels[i];
    const tr = el("tr");
    const grids = [t.window, t.kernel, t.products].map((m, k) => {
      const td = el("td");
      const g = el("div", "grid");
      drawGrid(g, m.map((r) => r.map((v) => Number(Number(v).toPrecision(3)))), k === 1 ? {} : { isPad });
      td.append(g);
      return td;
    });
    tr.append(el("td", "", `in ${t.channel}`), grids[0], el("td", "", "\u2299"), grids[1], el("td", "", "="), grids[2],
      el("td", "sum", `\u03a3 = ${num6(t.sum)}`));
    rows.push(tr);
  }
  $("cell-rows").replaceChildren(...rows);
  $("cell-shown").textContent = cell.channels.length > shown.length
    ? `the ${shown.length} input channels with the largest |sum| of ${cell.channels.length}; all sums below`
    : `all ${cell.channels.length} input channel(s)`;
  const sums = order.map((i) => `${cell.channels[i].channel}: ${num6(cell.channels[i].sum)}`);
  $("cell-sums").textContent = `per input channel (by |sum|): ${sums.join(", ")}`;
  const channelSum = cell.channels.reduce((s, t) => s + t.sum, 0);
  $("cell-sum").textContent = num6(channelSum);
  $("cell-bias").textContent = cell.bias === null ? "none" : num6(cell.bias);
  $("cell-total").textContent = num6(cell.total);
  $("cell-total").dataset.value = String(cell.total);
  $("cell-network-total").textContent = num6(cell.network_total);
  $("cell-check").textContent = cell.total_agrees
    ? `\u2713 equals the network's own output (|difference| ${Number(Math.abs(cell.total - cell.network_total).toPrecision(2))} <= ${Number(cell.tolerance.toPrecision(2))}, float32 rounding)`
    : `\u2717 differs from the network's own output by ${num6(cell.total - cell.network_total)}`;
  $("cell-check").className = cell.total_agrees ? "ok" : "error";
  $("cell-after").textContent = cell.after.length ? cell.after.join(" \u2192 ") : "nothing (no activation module follows)";
  $("cell-read").textContent = cell.read_at;
  $("cell-post").textContent = num6(cell.post);
  $("cell-post").dataset.value = String(cell.post);
  $("cell-network-post").textContent = num6(cell.network_post);
  $("cell-post-check").textContent = (cell.post_agrees ? "\u2713 equals the network's own output there" :
    "\u2717 not this cell's chain") + (cell.post_note ? ` (${cell.post_note})` : "");
  $("cell-post-check").className = cell.post_agrees ? "ok" : "error";
}

// ---- a channel ------------------------------------------------------------------------------
function loadChannel(layer, channel) {
  net.channel = { layer, channel };
  const seq = ++net.partSeq;
  $("chan-panel").hidden = false;
  $("chan-title").textContent = `${layer}, channel ${channel}` + (net.epoch !== null ? ` at epoch ${net.epoch}` : "");
  for (const id of ["chan-atlas", "chan-patches", "chan-template", "chan-vis", "chan-proj"]) $(id).replaceChildren();
  pollPart("atlas", seq);
  pollPart("patches", seq);
  pollPart("template", seq);
  if (net.render) pollPart("visualization", seq);
  else $("chan-vis-status").textContent = "press Render: a visualisation takes seconds to a minute on CPU";
}

async function pollPart(part, seq) {
  const { layer, channel } = net.channel;
  const sid = net.id;
  const status = $(`chan-${part === "visualization" ? "vis" : part}-status`);
  const started = performance.now();
  const q = new URLSearchParams({ layer, channel: String(channel), part });
  if (net.epoch !== null) q.set("epoch", String(net.epoch));
  for (;;) {
    if (seq !== net.partSeq) return;
    let r;
    try {
      r = await api("GET", `/api/network/${sid}/channel?${q.toString()}`);
    } catch (e) {
      status.textContent = `${part}: ${e.message}`;
      return;
    }
    if (seq !== net.partSeq) return;
    if (r.status === "computing") {
      status.textContent = `${part}: computing... ${fmt((performance.now() - started) / 1000)} s`;
      await new Promise((resolve) => setTimeout(resolve, 500));
      continue;
    }
    if (r.status === "error") {
      status.textContent = `${part}: ${r.message}`;
      return;
    }
    status.textContent = `${part}: computed in ${fmt(r.seconds || 0)} s (cached)`;
    drawPart(part, r.result);
    return;
  }
}

function cropCanvas(flatArr, offset, cin, rh, rw, title) {
  const canvas = el("canvas");
  drawCrop(canvas, flatArr.data, offset, rh, rw, cin);
  fitCanvas(canvas, rh, rw, 56);
  canvas.title = title;
  return canvas;
}

function signedCanvas(flatArr, title) {
  const [cin, h, w] = flatArr.shape;
  const canvas = el("canvas");
  drawArray(canvas, flatArr.data, 0, h, w, cin, flatArr.vmin, flatArr.vmax);
  fitCanvas(canvas, h, w, 56);
  canvas.title = title;
  return canvas;
}

function drawPart(part, r) {
  if (part === "atlas") {
    const scores = Object.entries(r.scores).map(([k, v]) => `${k} ${v === null ? "n/a" : fmt(v)} (control ${r.thresholds[k] === null ? "n/a" : fmt(r.thresholds[k])})`);
    $("chan-atlas").replaceChildren(el("div", "", `class: ${r.kernel_class}; best classical match: ${r.best_name} ${r.best_params} (${r.best_family}, score ${fmt(r.best_score)})`),
      el("div", "muted small", `scores: ${scores.join(", ")}`));
  } else if (part === "patches") {
    const [k, cin, rh, rw] = r.crops.shape;
    const row = el("div", "patch-row");
    for (let t = 0; t < k; t++) {
      row.append(cropCanvas(r.crops, t * cin * rh * rw, cin, rh, rw, `image ${r.image_index[t]} of ${r.images}: activation ${fmt(r.values[t])}`));
    }
    $("chan-patches").replaceChildren(row, el("div", "muted small", `the ${k} most activating of ${r.n_images} images (${r.images}); violet: outside the image`));
  } else if (part === "template") {
    $("chan-template").replaceChildren(signedCanvas(r.template, "linear template"), signedCanvas(r.kernel, "the kernel (mean over input channels when not RGB)"),
      el("div", "muted small", `template (ridge fit of ${r.read} on ${r.images}; held-out R\u00b2 ${r.r2 === null ? "n/a" : fmt(r.r2)}) beside the kernel`));
  } else if (part === "visualization") {
    const [cin, h, w] = r.image.shape;
    const canvas = el("canvas");
    drawImage(canvas, r.image.data, 0, h, w, cin);
    fitCanvas(canvas, h, w, 112);
    const weak = r.init_ratio !== null && r.ratio !== null && r.ratio <= r.init_ratio;
    $("chan-vis").replaceChildren(canvas, el("div", "muted small",
      `${r.steps} steps; reaches ${fmt(r.ratio)} x the channel's maximum over ${r.images} ` +
      `(init control ${r.init_ratio === null ? "n/a" : fmt(r.init_ratio)} x; random direction ${r.random_ratio === null ? "n/a" : fmt(r.random_ratio)} x)` +
      (weak ? " \u2014 no better than the init control: not a finding" : "")));
    const [k, pc, rh, rw] = r.patches.shape;
    const table = el("table", "proj-table");
    const rows = [["top patch", null], ...Object.keys(r.projections).map((m) => [m, r.projections[m]])];
    for (const [name, arr] of rows) {
      const tr = el("tr");
      tr.append(el("td", "klabel", name));
      for (let t = 0; t < k; t++) {
        const td = el("td");
        const off = t * pc * rh * rw;
        if (arr === null) {
          td.append(cropCanvas(r.patches, off, pc, rh, rw, `activation ${fmt(r.values[t])}`));
        } else {
          const c2 = el("canvas");
          let m = 0;
          for (let i = 0; i < pc * rh * rw; i++) m = Math.max(m, Math.abs(arr.data[off + i]));
          drawArray(c2, arr.data, off, rh, rw, pc, -m, m);
          const z = Math.max(1, Math.floor(56 / Math.max(rh, rw)));
          c2.style.width = `${rw * z}px`;
          c2.style.height = `${rh * z}px`;
          c2.title = `${name} projection of top patch ${t}`;
          td.append(c2);
        }
        tr.append(td);
      }
      table.append(tr);
    }
    $("chan-proj").replaceChildren(table, el("div", "muted small", "each top patch (first row) above its projections into pixels"));
  }
}

function analyseChannel() {
  if (!net.channel) return;
  net.analyse = true;  // from now on a clicked channel is analysed at once
  loadChannel(net.channel.layer, net.channel.channel);
}

function renderVisualisation() {
  if (!net.channel) return;
  if (!net.analyse) analyseChannel();
  net.render = true;  // from now on a channel or epoch change renders again
  pollPart("visualization", net.partSeq);
}

function startNetwork() {
  $("net-select").addEventListener("change", () => selectNetwork(Number($("net-select").value)));
  $("net-image").addEventListener("change", () => { net.image = $("net-image").value; loadMaps(); });
  $("net-max-channels").addEventListener("change", loadMaps);
  $("net-epoch").addEventListener("input", () => {
    const info = net.list.find((n) => n.id === net.id);
    net.epoch = info.epochs[Number($("net-epoch").value)];
    $("net-epoch-label").textContent = `${net.epoch} (checkpoints: ${info.epochs.join(", ")})`;
    loadMaps();
    if (net.channel) offerChannel(net.channel.layer, net.channel.channel);
  });
  $("net-maps").addEventListener("click", onMapClick);
  $("chan-render").addEventListener("click", renderVisualisation);
  $("chan-analyse").addEventListener("click", analyseChannel);
  $("net-upload").addEventListener("change", async () => {
    const file = $("net-upload").files[0];
    if (!file) return;
    try {
      const response = await fetch("/api/network/upload", { method: "POST", body: file });
      const data = await response.json();
      if (!response.ok) throw new Error(data.detail || response.statusText);
      const option = el("option", "", data.image);
      $("net-image").append(option);
      $("net-image").value = data.image;
      net.image = data.image;
      loadMaps();
    } catch (e) {
      $("net-error").textContent = `upload: ${e.message}`;
    }
  });
}

function networkShown() {
  if (net.started) return;
  net.started = true;
  loadNetworks().catch((e) => { $("net-error").textContent = e.message; });
}
