// The demo page's script: plain JavaScript on the bundle that `deno task build:web` writes to dist/.
import * as t2t from "./dist/t2t-vit.js";

const $ = (id) => document.getElementById(id);
const state = { model: null, weightsName: "", image: null, imageName: "", loading: false };
/** Read by the browser test: what the page did last. */
globalThis.t2tDemo = { state, t2t, ready: false, runs: 0 };

const ms = (v) => `${v < 10 ? v.toFixed(1) : Math.round(v)} ms`;

function showError(e) {
  const box = $("error");
  if (!e) {
    box.style.display = "none";
    box.textContent = "";
    return;
  }
  // our typed errors name the file, key or tensor at fault; anything else is shown as it came
  box.textContent = e instanceof t2t.T2tVitError ? `${e.name}: ${e.message}` : `Error: ${e?.message ?? e}`;
  box.style.display = "block";
  globalThis.t2tDemo.lastError = box.textContent;
}

function setStatus(text) {
  $("status").textContent = text;
}

function backendLine() {
  const name = t2t.currentBackend() ?? "none";
  let extra = "";
  if (name === "wasm") {
    const n = t2t.wasmThreadsCount();
    extra = `, ${n} thread${n === 1 ? "" : "s"}${
      crossOriginIsolated ? "" : " (page not cross-origin isolated)"
    }`;
  } else if (name === "webgpu") {
    const a = t2t.webGpuAdapter();
    extra = a ? `, ${a.description || a.vendor || "adapter"}${a.isSoftware ? " (software)" : ""}` : "";
  }
  return `${name}${extra}`;
}

async function startBackend() {
  const want = $("backend").value || undefined;
  // threads where the page may have them: cross-origin isolated (COOP/COEP headers)
  const threads = crossOriginIsolated
    ? Math.min(navigator.hardwareConcurrency || 1, t2t.MAX_WASM_THREADS)
    : 1;
  return await t2t.setBackend(want, { wasmThreads: threads });
}

function fillModels() {
  const sel = $("model");
  sel.add(new Option("auto (the weights say)", ""));
  for (const n of t2t.MODEL_NAMES) sel.add(new Option(n, n));
}

async function loadWeights(source, name) {
  if (state.loading) return;
  state.loading = true;
  showError(null);
  $("run").disabled = true;
  try {
    const t0 = performance.now();
    await startBackend();
    const t1 = performance.now();
    setStatus(`Loading ${name}…`);
    const arch = $("model").value;
    const model = arch ? await t2t.createModel(arch, { weights: source }) : await t2t.loadModel(source);
    const t2 = performance.now();
    state.model?.dispose();
    state.model = model;
    state.weightsName = name;
    state.loadMs = t2 - t1;
    setStatus(
      `${model.name} (${model.config.numClasses} classes, ` +
        `${model.config.imgSize}px) from ${name} in ${ms(t2 - t1)}; backend ${backendLine()} ` +
        `(started in ${ms(t1 - t0)})`,
    );
  } catch (e) {
    setStatus(
      state.model ? `Still using ${state.model.name} from ${state.weightsName}.` : "No model loaded.",
    );
    showError(e);
  } finally {
    state.loading = false;
    $("run").disabled = !(state.model && state.image);
  }
}

async function setImage(file) {
  showError(null);
  try {
    const bytes = new Uint8Array(await file.arrayBuffer());
    const t0 = performance.now();
    const img = t2t.decodeImage(bytes, file.name);
    state.decodeMs = performance.now() - t0;
    state.image = img;
    state.imageName = file.name;
    const prev = $("preview");
    if (prev.src) URL.revokeObjectURL(prev.src);
    prev.src = URL.createObjectURL(new Blob([bytes], { type: file.type || "image/png" }));
    prev.style.display = "block";
    $("drop-text").style.display = "none";
    $("image-info").textContent = `${file.name}: ${img.width} x ${img.height}, decoded in ${
      ms(state.decodeMs)
    }`;
  } catch (e) {
    state.image = null;
    $("image-info").textContent = "No image.";
    showError(e);
  }
  $("run").disabled = !(state.model && state.image);
}

function drawRgb(canvas, img) {
  canvas.width = img.width;
  canvas.height = img.height;
  const ctx = canvas.getContext("2d");
  const out = ctx.createImageData(img.width, img.height);
  for (let i = 0, j = 0; i < img.width * img.height; i++, j += 3) {
    out.data[i * 4] = img.data[j];
    out.data[i * 4 + 1] = img.data[j + 1];
    out.data[i * 4 + 2] = img.data[j + 2];
    out.data[i * 4 + 3] = 255;
  }
  ctx.putImageData(out, 0, 0);
}

async function classify() {
  const { model, image } = state;
  if (!model || !image) return;
  showError(null);
  $("run").disabled = true;
  const tf = t2t.tf;
  const owned = [];
  try {
    const t0 = performance.now();
    const pre = t2t.modelPreprocess(model);
    const { tensor, image: cropped } = t2t.preprocessImage(image, pre);
    const x = t2t.batchTensor([tensor], pre.crop[0], pre.crop[1]);
    owned.push(x);
    const t1 = performance.now();
    const r = model.forwardWithAttention(x);
    owned.push(r.logits, ...r.attentions);
    const logits = await r.logits.data();
    const t2 = performance.now();
    const top = t2t.topK(logits, 5, t2t.labelsFor(model.config.numClasses));
    const [stack] = await t2t.attentionStacks(r.attentions);
    const map = t2t.classTokenAttention(stack);
    const grid = Math.round(Math.sqrt(map.length));
    drawRgb($("overlay"), t2t.renderAttention(cropped, map, { grid: [grid, grid] }));
    const t3 = performance.now();
    // bars relative to the top class, so that a flat distribution still reads
    const rows = top.map((p) =>
      `<tr><td>${escapeHtml(p.label)}</td><td class="barcell"><div class="bar" style="width:${
        Math.max(1, (100 * p.probability) / top[0].probability).toFixed(1)
      }%"></div></td><td class="p">${(p.probability * 100).toFixed(2)}%</td></tr>`
    );
    $("top5").innerHTML = rows.join("");
    state.runs = (state.runs ?? 0) + 1;
    $("timings").innerHTML = [
      `preprocess (resize, crop, normalise): ${ms(t1 - t0)}`,
      `forward on ${backendLine()}: ${ms(t2 - t1)}${state.runs === 1 ? " (first run: includes set-up)" : ""}`,
      `attention overlay: ${ms(t3 - t2)}`,
      `weights ${escapeHtml(state.weightsName)}: loaded in ${ms(state.loadMs)}`,
    ].map((s) => `<li>${s}</li>`).join("");
    $("results").style.display = "block";
    globalThis.t2tDemo.top = top;
    globalThis.t2tDemo.runs++;
  } catch (e) {
    showError(e);
  } finally {
    tf.dispose(owned);
    $("run").disabled = false;
  }
}

function escapeHtml(s) {
  return String(s).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);
}

fillModels();
$("load-url").addEventListener("click", () => {
  const url = $("weights-url").value.trim();
  if (!url) return showError(new Error("type the URL of a .safetensors or .pth.tar file first"));
  loadWeights(url, url.slice(url.lastIndexOf("/") + 1) || url);
});
$("weights-file").addEventListener("change", (ev) => {
  const f = ev.target.files?.[0];
  if (f) loadWeights(f, f.name); // a File: its name labels any error
});
$("backend").addEventListener("change", async () => {
  showError(null);
  try {
    await startBackend();
    setStatus(
      state.model ? `${state.model.name} on ${backendLine()}` : `Backend ${backendLine()}; no model loaded.`,
    );
  } catch (e) {
    showError(e);
  }
});
const drop = $("drop");
drop.addEventListener("click", () => $("image-file").click());
drop.addEventListener("keydown", (ev) => (ev.key === "Enter" || ev.key === " ") && $("image-file").click());
$("image-file").addEventListener("change", (ev) => ev.target.files?.[0] && setImage(ev.target.files[0]));
drop.addEventListener("dragover", (ev) => {
  ev.preventDefault();
  drop.classList.add("over");
});
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (ev) => {
  ev.preventDefault();
  drop.classList.remove("over");
  const f = ev.dataTransfer?.files?.[0];
  if (f) setImage(f);
});
$("run").addEventListener("click", classify);
globalThis.t2tDemo.ready = true;
