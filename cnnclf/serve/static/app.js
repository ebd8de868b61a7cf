// The cnnclf serve page: no libraries, no network beyond this server.
"use strict";

const model = document.body.dataset.model;
const $ = (id) => document.getElementById(id);
const state = { card: null, threshold: null, items: [] };
const PARALLEL = 4;

function token() { return sessionStorage.getItem("cnnclf-token"); }

async function api(path, options = {}) {
  const headers = new Headers(options.headers || {});
  if (token()) headers.set("Authorization", "Bearer " + token());
  const response = await fetch(path, { ...options, headers });
  if (response.status === 401) {
    $("token-form").hidden = false;
    $("token").focus();
    throw new Error("this server needs a token: enter it above");
  }
  if (!response.ok) {
    let message = response.status + " " + response.statusText;
    try { message = (await response.json()).error || message; } catch (e) { /* not JSON */ }
    throw new Error(message);
  }
  return response;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) if (child) node.append(child);
  return node;
}

function percent(p) { return (100 * p).toFixed(1) + "%"; }

async function loadCard() {
  try {
    const response = await api(`/v1/models/${encodeURIComponent(model)}/metadata`);
    state.card = (await response.json()).metadata;
  } catch (error) {
    $("status").textContent = error.message;
    return;
  }
  const card = state.card;
  const facts = [
    ["Classes", card.classes.join(", ")],
    ["Image size", `${card.image_size[0]}×${card.image_size[1]} ${card.color_mode}`],
    ["Validation accuracy", card.validation.accuracy != null
      ? percent(card.validation.accuracy) + (card.validation_images != null ? ` (${card.validation_images} images)` : "")
      : "not recorded"],
    ["Trained", card.trained ? card.trained.replace("T", " ").replace(/:\d\d([+-]\d\d)(\d\d)$/, " $1:$2") : "unknown"],
    ["Model", card.architecture ? `${card.architecture}, ${card.kind}` : card.kind],
  ];
  // The header names the model by --name; say which bundle it is when that differs.
  if (card.bundle && card.bundle !== card.name) facts.unshift(["Bundle", card.bundle]);
  $("card").replaceChildren(...facts.map(([k, v]) => el("div", {}, el("dt", { text: k }), el("dd", { text: v }))));
  if (card.class_mode === "binary") {
    state.threshold = card.threshold ?? 0.5;
    $("threshold").value = state.threshold;
    $("threshold-value").textContent = state.threshold.toFixed(2);
    $("threshold-hint").textContent = `model's own: ${(card.threshold ?? 0.5).toFixed(2)}; ` +
      `${card.classes[1]} at or above it`;
    $("threshold-box").hidden = false;
  }
  if (!card.explain) {
    $("gradcam").disabled = true;
    $("gradcam-hint").textContent = "needs a Keras bundle (this is an export)";
  }
  $("status").textContent = "Ready: choose or drop images.";
}

function decide(probabilities) {
  // Binary models: relabel at the page's threshold, as predict --threshold would.
  const names = state.card.classes;
  if (state.card.class_mode !== "binary") {
    let best = names[0];
    for (const n of names) if (probabilities[n] > probabilities[best]) best = n;
    return best;
  }
  return probabilities[names[1]] >= state.threshold ? names[1] : names[0];
}

function render(item) {
  const { node, result } = item;
  const body = node.querySelector(".body");
  const bars = node.querySelector(".bars");
  node.querySelector(".error")?.remove();
  if (item.error) {
    body.querySelector(".label").textContent = "not classified";
    node.append(el("p", { class: "error", role: "alert", text: item.error }));
    return;
  }
  if (!result) return;
  const label = decide(result.probabilities);
  const labelNode = body.querySelector(".label");
  labelNode.replaceChildren(label, el("span", { class: "p", text: percent(result.probabilities[label]) }));
  node.dataset.label = label;
  const names = state.card.classes;
  bars.replaceChildren();
  for (const name of names) {
    const p = result.probabilities[name];
    const bar = el("div", {
      class: "bar" + (name === label ? " top" : ""), role: "meter", "aria-label": name,
      "aria-valuemin": "0", "aria-valuemax": "1", "aria-valuenow": String(p), "data-class": name,
    }, el("div", { class: "fill", style: `width:${(100 * p).toFixed(2)}%` }));
    if (state.card.class_mode === "binary" && name === names[1]) {
      bar.append(el("div", { class: "mark", title: "threshold", style: `left:calc(${(100 * state.threshold).toFixed(2)}% - 1px)` }));
    }
    bars.append(el("span", { class: "name", text: name }), bar, el("span", { class: "value", text: percent(p) }));
  }
  showGradcam(item);
}

async function showGradcam(item) {
  const want = $("gradcam").checked && item.result;
  let image = item.node.querySelector("img.gradcam");
  if (!want) { image?.remove(); return; }
  if (!item.gradcam) {
    item.gradcam = api("/explain", { method: "POST", body: form(item.file) })
      .then((r) => r.blob()).then((blob) => URL.createObjectURL(blob));
  }
  try {
    const url = await item.gradcam;
    if (!$("gradcam").checked) return;
    image = item.node.querySelector("img.gradcam");
    if (!image) {
      image = el("img", { class: "gradcam", alt: `Grad-CAM heatmap for ${item.file.name}` });
      item.node.append(image);
    }
    image.src = url;
  } catch (error) {
    item.gradcam = null;
    item.node.append(el("p", { class: "error", text: "Grad-CAM: " + error.message }));
  }
}

function form(file) {
  const data = new FormData();
  data.append("file", file, file.name);
  return data;
}

async function classify(item) {
  try {
    const response = await api("/predict", { method: "POST", body: form(item.file) });
    item.result = (await response.json())[0];
  } catch (error) {
    item.error = error.message;
  }
  render(item);
}

async function addFiles(files) {
  if (!state.card) await loadCard();
  if (!state.card) return;
  const fresh = [];
  for (const file of files) {
    const thumb = el("img", { class: "thumb", alt: file.name, src: URL.createObjectURL(file) });
    const node = el("li", { class: "result", tabindex: "-1" }, thumb,
      el("div", { class: "body" }, el("div", { class: "file", text: file.name }),
        el("div", { class: "label", text: "classifying…" })),
      el("div", { class: "bars" }));
    $("results").prepend(node);
    const item = { file, node, result: null, error: null, gradcam: null };
    state.items.push(item);
    fresh.push(item);
  }
  $("status").textContent = `Classifying ${fresh.length} image(s)…`;
  const queue = [...fresh];
  await Promise.all(Array.from({ length: PARALLEL }, async () => {
    while (queue.length) await classify(queue.shift());
  }));
  const failed = fresh.filter((i) => i.error).length;
  $("status").textContent = `${fresh.length - failed} image(s) classified` + (failed ? `, ${failed} failed` : "") + ".";
}

$("files").addEventListener("change", (event) => {
  addFiles([...event.target.files]);
  event.target.value = "";
});
const drop = $("drop");
for (const type of ["dragenter", "dragover"]) drop.addEventListener(type, (e) => { e.preventDefault(); drop.classList.add("over"); });
for (const type of ["dragleave", "drop"]) drop.addEventListener(type, (e) => { e.preventDefault(); drop.classList.remove("over"); });
drop.addEventListener("drop", (e) => addFiles([...e.dataTransfer.files]));
// Dropping a file anywhere else would make the browser navigate away from the page.
window.addEventListener("dragover", (e) => e.preventDefault());
window.addEventListener("drop", (e) => e.preventDefault());

$("threshold").addEventListener("input", (e) => {
  state.threshold = Number(e.target.value);
  $("threshold-value").textContent = state.threshold.toFixed(2);
  state.items.forEach(render);
});
$("gradcam").addEventListener("change", () => state.items.forEach(showGradcam));
$("clear").addEventListener("click", () => {
  state.items = [];
  $("results").replaceChildren();
  $("status").textContent = "Cleared.";
});
$("token-form").addEventListener("submit", (e) => {
  e.preventDefault();
  sessionStorage.setItem("cnnclf-token", $("token").value.trim());
  $("token-form").hidden = true;
  loadCard();
});

loadCard();
