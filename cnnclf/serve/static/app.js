// The cnnclf serve page: no libraries, no network beyond this server.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { card: null, threshold: null, items: [] };  // items: in upload order
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
    const response = await api("/card");
    state.card = await response.json();
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
  if (card.class_mode === "multi_label") {
    facts.splice(1, 0, ["Labels", "several per image, each at or over its own threshold: " +
      card.classes.map((c) => `${c} ${(card.thresholds?.[c] ?? 0.5).toFixed(2)}`).join(", ")]);
    if (card.validation.accuracy == null && card.validation.auc != null) {
      facts.splice(3, 1, ["Validation AUC", card.validation.auc.toFixed(3) +
        (card.validation_images != null ? ` (${card.validation_images} images)` : "")]);
    }
  }
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
  $("notice").textContent = card.notice || "";
  $("notice").hidden = !card.notice;
  $("rule").textContent = ruleText(card);
  if (!card.explain) {
    $("gradcam").disabled = true;
    $("gradcam-hint").textContent = "needs a Keras bundle (this is an export)";
  }
  $("status").textContent = "Ready: choose or drop images.";
}

// When a result is called uncertain: the one place this rule lives. The page's legend (ruleText)
// and docs/guide/serve.md say the same. Binary models: P(second class) near the decision
// threshold; the band shrinks to half the distance to 0 or 1 when the threshold is close to
// either, so that a threshold of 0.05 does not make a confident 0.00 "uncertain".
// Other models: the top class under FLOOR, or less than MARGIN ahead of the runner-up.
const UNCERTAIN = { band: 0.1, floor: 0.5, margin: 0.2 };

/**
 * The page's verdict on one prediction: label, its probability, and whether it is uncertain.
 *
 * Pure, so that the browser test can call it: probabilities is {class: p}, classes the
 * model's class order, threshold the page's threshold for binary models (null otherwise).
 * Example: verdict({a: 0.3, b: 0.25, c: 0.45}, ["a", "b", "c"], null)
 *   -> {label: "c", probability: 0.45, uncertain: true, reason: "top class 45.0% is under 50.0%"}
 */
function verdict(probabilities, classes, threshold) {
  if (threshold != null) {
    const p = probabilities[classes[1]];
    const label = p >= threshold ? classes[1] : classes[0];
    const low = threshold - Math.min(UNCERTAIN.band, threshold / 2);
    const high = threshold + Math.min(UNCERTAIN.band, (1 - threshold) / 2);
    const uncertain = p > low && p < high;
    const reason = uncertain
      ? `P(${classes[1]}) ${p.toFixed(3)} is near the threshold ${threshold.toFixed(2)} ` +
        `(uncertain from ${low.toFixed(2)} to ${high.toFixed(2)})`
      : "";
    return { label, probability: probabilities[label], uncertain, reason };
  }
  const ranked = [...classes].sort((a, b) => probabilities[b] - probabilities[a]);
  const [top, second] = ranked;
  const p = probabilities[top];
  let reason = "";
  if (p < UNCERTAIN.floor) {
    reason = `top class ${percent(p)} is under ${percent(UNCERTAIN.floor)}`;
  } else if (second !== undefined && p - probabilities[second] < UNCERTAIN.margin) {
    reason = `only ${(100 * (p - probabilities[second])).toFixed(1)} points ahead of ` +
      `${second} (${percent(probabilities[second])}); under ${100 * UNCERTAIN.margin} points`;
  }
  return { label: top, probability: p, uncertain: reason !== "", reason };
}

/**
 * verdict() for a multi-label model: every class at or over its own threshold is a label
 * (possibly none), and a label is uncertain when its class's probability is within the binary
 * band of its threshold, on either side (a class just under it is a label that may be missing).
 * Example: multiLabelVerdict({a: 0.9, b: 0.45}, ["a", "b"], {a: 0.5, b: 0.5})
 *   -> {labels: ["a"], label: "a", uncertain: true, uncertainClasses: ["b"], reason: "..."}
 */
function multiLabelVerdict(probabilities, classes, thresholds) {
  const labels = classes.filter((c) => probabilities[c] >= (thresholds?.[c] ?? 0.5))
    .sort((a, b) => probabilities[b] - probabilities[a]);
  const uncertainClasses = [], near = [];
  for (const c of classes) {
    const t = thresholds?.[c] ?? 0.5;
    const low = t - Math.min(UNCERTAIN.band, t / 2);
    const high = t + Math.min(UNCERTAIN.band, (1 - t) / 2);
    if (probabilities[c] > low && probabilities[c] < high) {
      uncertainClasses.push(c);
      near.push(`P(${c}) ${probabilities[c].toFixed(3)} is near its threshold ${t.toFixed(2)}`);
    }
  }
  return {
    labels, label: labels.length ? labels.join(", ") : "(no label)",
    probability: labels.length ? probabilities[labels[0]] : null,
    uncertain: near.length > 0, uncertainClasses, reason: near.join("; "),
  };
}

function multiLabel() { return state.card?.class_mode === "multi_label"; }

function ruleText(card) {
  if (card.class_mode === "multi_label") {
    return `"Uncertain": some class's probability within ${UNCERTAIN.band.toFixed(2)} of its ` +
      "own threshold (less when the threshold is near 0 or 1), over it or under it.";
  }
  if (card.class_mode === "binary") {
    return `"Uncertain": P(${card.classes[1]}) within ${UNCERTAIN.band.toFixed(2)} of the ` +
      "decision threshold (less when the threshold is near 0 or 1).";
  }
  return `"Uncertain": the top class under ${percent(UNCERTAIN.floor)}, or less than ` +
    `${100 * UNCERTAIN.margin} points ahead of the runner-up.`;
}

function pageThreshold() { return state.card.class_mode === "binary" ? state.threshold : null; }

function render(item) {
  const { node, result } = item;
  const body = node.querySelector(".body");
  const bars = node.querySelector(".bars");
  node.querySelector(".error")?.remove();
  if (item.error) {
    body.querySelector(".label").textContent = "not classified";
    node.dataset.failed = "true";
    node.append(el("p", { class: "error", role: "alert", text: item.error }));
    return;
  }
  if (!result) return;
  const names = state.card.classes;
  const thresholds = result.thresholds ?? state.card.thresholds;
  const v = multiLabel()
    ? multiLabelVerdict(result.probabilities, names, thresholds)
    : verdict(result.probabilities, names, pageThreshold());
  item.verdict = v;
  if (multiLabel()) {
    body.querySelector(".label").replaceChildren(...(v.labels.length
      ? v.labels.map((c) => el("span", {
        class: "chip" + (v.uncertainClasses.includes(c) ? " unsure" : ""), "data-class": c,
      }, c, el("span", { class: "p", text: percent(result.probabilities[c]) })))
      : [el("span", { class: "none", text: "(no label)" })]));
  } else {
    body.querySelector(".label").replaceChildren(v.label, el("span", { class: "p", text: percent(v.probability) }));
  }
  node.dataset.label = v.label;
  if (v.labels) node.dataset.labels = v.labels.join(" ");
  node.dataset.uncertain = String(v.uncertain);
  node.classList.toggle("uncertain", v.uncertain);
  node.classList.toggle("multi", multiLabel());
  body.querySelector(".verdict").replaceChildren(...(v.uncertain
    ? [el("span", { class: "badge", title: ruleText(state.card), text: "uncertain" }), " " + v.reason]
    : []));
  bars.replaceChildren();
  for (const name of names) {
    const p = result.probabilities[name];
    const chosen = multiLabel() ? v.labels.includes(name) : name === v.label;
    const unsure = multiLabel() && v.uncertainClasses.includes(name);
    const bar = el("div", {
      class: "bar" + (chosen ? " top" : "") + (unsure ? " unsure" : ""), role: "meter", "aria-label": name,
      "aria-valuemin": "0", "aria-valuemax": "1", "aria-valuenow": String(p), "data-class": name,
    }, el("div", { class: "fill", style: `width:${(100 * p).toFixed(2)}%` }));
    if (state.card.class_mode === "binary" && name === names[1]) {
      bar.append(el("div", { class: "mark", title: "threshold", style: `left:calc(${(100 * state.threshold).toFixed(2)}% - 1px)` }));
    }
    if (multiLabel()) {
      const t = thresholds?.[name] ?? 0.5;
      bar.append(el("div", { class: "mark", title: `threshold ${t.toFixed(2)}`, style: `left:calc(${(100 * t).toFixed(2)}% - 1px)` }));
    }
    bars.append(el("span", { class: "name", text: name }), bar, el("span", { class: "value", text: percent(p) }));
  }
  showGradcam(item);
}

async function showGradcam(item) {
  const want = $("gradcam").checked && item.result;
  if (!want) { item.node.querySelector(".zoom.gradcam-zoom")?.remove(); return; }
  if (!item.gradcam) {
    item.gradcam = api("/explain", { method: "POST", body: form(item.file) })
      .then((r) => r.blob()).then((blob) => URL.createObjectURL(blob));
  }
  try {
    const url = await item.gradcam;
    if (!$("gradcam").checked) return;
    let image = item.node.querySelector("img.gradcam");
    if (!image) {
      image = el("img", { class: "gradcam", alt: `Grad-CAM heatmap for ${item.file.name}` });
      item.node.append(zoomButton(image, `Enlarge the Grad-CAM of ${item.file.name}`));
    }
    image.src = url;
  } catch (error) {
    item.gradcam = null;
    item.node.append(el("p", { class: "error", text: "Grad-CAM: " + error.message }));
  }
}

function zoomButton(image, label) {
  const kind = image.classList.contains("gradcam") ? "gradcam-zoom" : "thumb-zoom";
  return el("button", { type: "button", class: `zoom ${kind}`, "aria-label": label, title: "Click to enlarge" }, image);
}

function zoom(image, item) {
  const gradcam = image.classList.contains("gradcam");
  const v = item?.verdict;
  $("zoom-image").src = image.src;
  $("zoom-image").alt = image.alt;
  $("zoom-image").classList.toggle("pixels", !gradcam);
  $("zoom-caption").textContent = image.alt +
    (v ? ` — ${v.label}${v.probability != null && !v.labels ? " " + percent(v.probability) : ""}` +
      `${v.uncertain ? ", uncertain: " + v.reason : ""}` : "");
  $("zoom-legend").hidden = !gradcam;
  $("zoom").showModal();
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
  updateDownloads();
}

async function addFiles(files) {
  if (!state.card) await loadCard();
  if (!state.card) return;
  const fresh = [];
  for (const file of files) {
    // The card is placed now, in upload order; its answer fills it in whenever it comes.
    const index = state.items.length + 1;
    const thumb = el("img", { class: "thumb", alt: file.name, src: URL.createObjectURL(file) });
    const node = el("li", { class: "result", tabindex: "-1", "data-index": String(index) },
      zoomButton(thumb, `Enlarge ${file.name}`),
      el("div", { class: "body" },
        el("div", { class: "meta" }, el("span", { class: "index", text: `#${index}` }),
          el("span", { class: "file", text: file.name })),
        el("div", { class: "label", text: "classifying…" }),
        el("div", { class: "verdict" })),
      el("div", { class: "bars" }));
    $("results").append(node);
    const item = { index, file, node, result: null, error: null, gradcam: null, verdict: null };
    state.items.push(item);
    fresh.push(item);
  }
  $("status").textContent = `Classifying ${fresh.length} image(s)…`;
  const queue = [...fresh];
  await Promise.all(Array.from({ length: PARALLEL }, async () => {
    while (queue.length) await classify(queue.shift());
  }));
  summarize();
}

function summarize() {
  const done = state.items.every((i) => i.result || i.error);  // no batch still running
  if (!state.items.length || !done) return;
  const failed = state.items.filter((i) => i.error).length;
  const uncertain = state.items.filter((i) => i.result && i.verdict?.uncertain).length;
  $("status").textContent = `${state.items.length - failed} image(s) classified` +
    (uncertain ? `, ${uncertain} uncertain` : "") + (failed ? `, ${failed} failed` : "") + ".";
}

// Downloads: built here from what the page shows (its threshold included), never re-fetched.

/** One object per image, in upload order: what the CSV and JSON downloads hold. */
function resultRows() {
  if (multiLabel()) return multiLabelRows();
  return state.items.filter((i) => i.result || i.error).map((item) => ({
    index: item.index,
    file: item.file.name,
    label: item.verdict?.label ?? null,
    probability: item.verdict?.probability ?? null,
    uncertain: item.verdict ? item.verdict.uncertain : null,
    uncertain_reason: item.verdict?.reason || null,
    threshold: item.result ? pageThreshold() : null,
    probabilities: item.result ? item.result.probabilities : null,
    error: item.error,
  }));
}

/** resultRows() for a multi-label model: labels (a list) instead of label and probability. */
function multiLabelRows() {
  return state.items.filter((i) => i.result || i.error).map((item) => ({
    index: item.index,
    file: item.file.name,
    labels: item.verdict?.labels ?? null,
    uncertain: item.verdict ? item.verdict.uncertain : null,
    uncertain_reason: item.verdict?.reason || null,
    thresholds: item.result ? (item.result.thresholds ?? state.card.thresholds) : null,
    probabilities: item.result ? item.result.probabilities : null,
    error: item.error,
  }));
}

function csvField(value) {
  let text = value == null ? "" : String(value);
  // A file name like "=HYPERLINK(...)" would run as a formula in a spreadsheet.
  if (typeof value === "string" && /^[=+\-@\t\r]/.test(text)) text = "'" + text;
  return /[",\r\n]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
}

function resultsCsv() {
  const classes = state.card.classes;
  if (multiLabel()) {
    // labels: space-separated, as in predict's CSV and the label files training reads.
    const header = ["index", "file", "labels", "uncertain", "uncertain_reason",
      ...classes.map((c) => "p_" + c), ...classes.map((c) => "threshold_" + c), "error"];
    const lines = resultRows().map((r) => [r.index, r.file, r.labels?.join(" "), r.uncertain,
      r.uncertain_reason, ...classes.map((c) => r.probabilities?.[c]),
      ...classes.map((c) => r.thresholds?.[c]), r.error]);
    return [header, ...lines].map((row) => row.map(csvField).join(",")).join("\r\n") + "\r\n";
  }
  const header = ["index", "file", "label", "probability", "uncertain", "uncertain_reason", "threshold",
    ...classes.map((c) => "p_" + c), "error"];
  const lines = resultRows().map((r) => [r.index, r.file, r.label, r.probability, r.uncertain,
    r.uncertain_reason, r.threshold, ...classes.map((c) => r.probabilities?.[c]), r.error]);
  return [header, ...lines].map((row) => row.map(csvField).join(",")).join("\r\n") + "\r\n";
}

function resultsJson() {
  const card = state.card;
  return JSON.stringify({
    model: card.name, bundle: card.bundle, classes: card.classes, notice: card.notice || null,
    uncertain_rule: ruleText(card), exported: new Date().toISOString(), results: resultRows(),
  }, null, 2) + "\n";
}

function download(text, type, extension) {
  const stamp = new Date().toISOString().slice(0, 19).replace(/[-:]/g, "").replace("T", "-");
  const name = `${(state.card?.name || "model").replace(/[^\w.-]+/g, "_")}-predictions-${stamp}.${extension}`;
  const url = URL.createObjectURL(new Blob([text], { type }));
  const link = el("a", { href: url, download: name, hidden: "" });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

function updateDownloads() {
  const none = !state.items.some((i) => i.result || i.error);
  $("download-csv").disabled = none;
  $("download-json").disabled = none;
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
  summarize();
});
$("gradcam").addEventListener("change", () => {
  $("gradcam-legend").hidden = !$("gradcam").checked;
  state.items.forEach(showGradcam);
});
$("results").addEventListener("click", (e) => {
  const button = e.target.closest("button.zoom");
  if (button) zoom(button.querySelector("img"), state.items.find((i) => i.node.contains(button)));
});
// Esc closes the dialog natively; so does any click on it.
$("zoom").addEventListener("click", () => $("zoom").close());
$("download-csv").addEventListener("click", () => download(resultsCsv(), "text/csv;charset=utf-8", "csv"));
$("download-json").addEventListener("click", () => download(resultsJson(), "application/json", "json"));
$("clear").addEventListener("click", () => {
  state.items = [];
  $("results").replaceChildren();
  updateDownloads();
  $("status").textContent = "Cleared.";
});
$("token-form").addEventListener("submit", (e) => {
  e.preventDefault();
  sessionStorage.setItem("cnnclf-token", $("token").value.trim());
  $("token-form").hidden = true;
  loadCard();
});

loadCard();
