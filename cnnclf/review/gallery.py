"""index.html: the review as one self-contained, offline page a person decides from.

Thumbnails are inlined as data: URIs (no server, no network, nothing else to copy), grouped by
issue, each with its given and suggested label, its score and a keep / relabel to X / remove
control. The page builds decisions.csv (`path,action,label`) in the browser and downloads it;
`cnnclf review --apply decisions.csv --review FOLDER` applies it. Served by `cnnclf serve
--review FOLDER` (serve/review.py), it also saves them as FOLDER/decisions.csv and restores
its marks from that file when reopened. An image shown in two sections gets one row.

At most MAX_PER_GROUP images are shown per issue kind, so the page stays a few megabytes
whatever the data set; issues.csv lists every one.
"""

from __future__ import annotations

import base64
import html
import io
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from cnnclf.review.issues import Issue
from cnnclf.review.ranking import confusion
from cnnclf.training.filesystem import write_atomically

MAX_PER_GROUP = 200
THUMBNAIL = 96
TITLES = {
    "label": "Likely mislabeled",
    "ambiguous": "Ambiguous: no class is confident",
    "near_duplicate": "Near duplicates",
    "outlier": "Outliers: far from every class",
}


def thumbnail(path: str) -> str:
    """A small PNG of the image as a data: URI ('' when it cannot be read)."""
    try:
        with Image.open(path) as opened:
            image = ImageOps.exif_transpose(opened).convert("RGB")
            image.thumbnail((THUMBNAIL, THUMBNAIL))
            if max(image.size) < THUMBNAIL:  # tiny images: scaled up, pixels kept sharp
                factor = THUMBNAIL // max(image.size)
                image = image.resize(
                    (image.width * factor, image.height * factor), Image.Resampling.NEAREST
                )
            buffer = io.BytesIO()
            image.save(buffer, "PNG")
    except (OSError, ValueError, Image.DecompressionBombError):
        return ""
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def write_gallery(folder: Path, scored, issues: list[Issue]) -> None:
    """Writes folder/index.html by one rename."""
    page = render(scored, issues)
    data = page.encode("utf-8")
    write_atomically(folder / "index.html", lambda f: f.write(data))


def render(scored, issues: list[Issue]) -> str:
    names = scored.class_names
    train = np.array([s == "train" for s in scored.splits])
    multi = scored.labels.ndim == 2
    if multi:
        pairs, table = _class_facts(scored.labels[train], scored.probabilities[train], names)
    else:
        matrix = confusion(
            scored.labels[train], scored.probabilities[train].argmax(axis=1), len(names)
        )
        pairs, table = _pairs(matrix, names), _matrix(matrix, names)
    groups: dict[str, list[Issue]] = defaultdict(list)
    for issue in issues:
        groups[issue.issue].append(issue)
    sections = [
        _section(kind, groups[kind], names, multi)
        for kind in [*TITLES, *sorted(set(groups) - set(TITLES))]
        if groups.get(kind)
    ]
    summary = ", ".join(f"{len(v)} {k}" for k, v in groups.items()) or "no issues found"
    return _PAGE.format(
        summary=html.escape(f"{len(scored.paths)} images, {len(names)} classes: {summary}"),
        pairs=pairs,
        matrix=table,
        sections="\n".join(sections) or "<p>Nothing to review.</p>",
    )


def _pairs(matrix: np.ndarray, names: list[str]) -> str:
    pairs = [
        (int(matrix[i, j]), names[i], names[j])
        for i in range(len(names))
        for j in range(len(names))
        if i != j and matrix[i, j]
    ]
    pairs.sort(key=lambda p: -p[0])
    items = "".join(
        f"<li>labelled <b>{html.escape(a)}</b>, predicted <b>{html.escape(b)}</b>: {n}</li>"
        for n, a, b in pairs[:10]
    )
    return f"<ol id='pairs'>{items}</ol>" if items else "<p id='pairs'>No confusions.</p>"


def _matrix(matrix: np.ndarray, names: list[str]) -> str:
    head = "".join(f"<th>{html.escape(n)}</th>" for n in names)
    rows = "".join(
        f"<tr><th>{html.escape(name)}</th>"
        + "".join(
            f"<td class='{'diag' if i == j else 'off' if matrix[i, j] else ''}'>{matrix[i, j]}</td>"
            for j in range(len(names))
        )
        + "</tr>"
        for i, name in enumerate(names)
    )
    return f"<table id='confusion'><tr><th>given \\ predicted</th>{head}</tr>{rows}</table>"


def _section(kind: str, issues: list[Issue], names: list[str], multi: bool = False) -> str:
    title = TITLES.get(kind, f"check-data: {kind}")
    shown = issues[:MAX_PER_GROUP]
    more = (
        f"<p>{len(issues) - len(shown)} more in issues.csv.</p>" if len(issues) > len(shown) else ""
    )
    cards = "\n".join(_card(issue, names, multi) for issue in shown)
    return (
        f"<section id='{html.escape(kind)}'><h2>{html.escape(title)} ({len(issues)})</h2>"
        f"<div class='grid'>{cards}</div>{more}</section>"
    )


def _card(issue: Issue, names: list[str], multi: bool = False) -> str:
    source = thumbnail(issue.path)
    image = f"<img src='{source}' alt=''>" if source else "<div class='noimg'>unreadable</div>"
    options = ["<option value='keep'>keep</option>"]
    if multi:
        options += _set_options(issue, names)
    else:
        options += [
            f"<option value='relabel:{html.escape(n)}'>relabel to {html.escape(n)}</option>"
            for n in names
            if n != issue.label
        ]
    options.append("<option value='remove'>remove</option>")
    # Multi-label, an empty suggested set is a suggestion too (remove every label): the page's
    # "Relabel all to suggested" reads data-has-suggestion, not whether data-suggested is "".
    has_suggestion = bool(issue.suggested) or (multi and issue.issue == "label")
    suggested = f" → <b>{html.escape(issue.suggested)}</b>" if issue.suggested else ""
    if has_suggestion and not issue.suggested:
        suggested = " → <b>(no label)</b>"
    detail = f"<div class='detail'>{html.escape(issue.detail)}</div>" if issue.detail else ""
    name = Path(issue.path).name
    return (
        f"<figure class='card' data-path='{html.escape(issue.path)}' "
        f"data-suggested='{html.escape(issue.suggested)}'"
        f"{' data-has-suggestion' if has_suggestion else ''}>{image}"
        f"<figcaption title='{html.escape(issue.path)}'>{html.escape(name)}"
        f"<div>{html.escape(issue.label or '?')}{suggested} · {issue.score:.2f}"
        f" · {html.escape(issue.split)}</div>{detail}"
        f"<select class='decision'>{''.join(options)}</select></figcaption></figure>"
    )


def _set_options(issue: Issue, names: list[str]) -> list[str]:
    """Multi-label relabel choices: the suggested set, then the given set with one class added
    or dropped; each option's value carries the whole new set, as decisions.csv does."""
    given = [n for n in names if n in issue.label.split() or n == issue.label]
    choices = {}
    if issue.issue == "label":
        choices[issue.suggested] = f"relabel to {issue.suggested or '(no label)'}"
    for name in names:
        if name in given:
            new, text = [n for n in given if n != name], f"drop {name}"
        else:
            new, text = [n for n in names if n in given or n == name], f"add {name}"
        choices.setdefault(" ".join(new), text)
    return [
        f"<option value='relabel:{html.escape(value)}'>{html.escape(text)}</option>"
        for value, text in choices.items()
    ]


def _class_facts(given: np.ndarray, probabilities: np.ndarray, names: list[str]):
    """Multi-label: (the classes most often disagreed on, a per-class table of given against
    predicted); predicted is p >= 0.5, as the label-issue ranking decides it."""
    predicted = probabilities >= 0.5
    carried = given == 1
    rows = [
        (
            name,
            int(carried[:, j].sum()),
            int(predicted[:, j].sum()),
            int((carried[:, j] & ~predicted[:, j]).sum()),
            int((~carried[:, j] & predicted[:, j]).sum()),
        )
        for j, name in enumerate(names)
    ]
    worst = sorted((r for r in rows if r[3] + r[4]), key=lambda r: -(r[3] + r[4]))
    items = "".join(
        f"<li><b>{html.escape(name)}</b>: given, not predicted {missed}; "
        f"predicted, not given {extra}</li>"
        for name, _, _, missed, extra in worst[:10]
    )
    pairs = f"<ol id='pairs'>{items}</ol>" if items else "<p id='pairs'>No disagreements.</p>"
    head = "<tr><th>class</th><th>given</th><th>predicted</th>"
    head += "<th>given, not predicted</th><th>predicted, not given</th></tr>"
    body = "".join(
        f"<tr><th>{html.escape(r[0])}</th><td>{r[1]}</td><td>{r[2]}</td>"
        f"<td class='{'off' if r[3] else ''}'>{r[3]}</td>"
        f"<td class='{'off' if r[4] else ''}'>{r[4]}</td></tr>"
        for r in rows
    )
    return pairs, f"<table id='confusion'>{head}{body}</table>"


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>cnnclf review</title><link rel="icon" href="data:,">
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }}
h1 {{ margin: 0 0 .2em; }} h2 {{ border-bottom: 1px solid #ccc; margin-top: 1.5em; }}
.grid {{ display: flex; flex-wrap: wrap; gap: 10px; }}
.card {{ margin: 0; width: 150px; border: 1px solid #ddd; border-radius: 6px; padding: 6px;
  font-size: 12px; background: #fafafa; }}
.card img, .noimg {{ display: block; width: 96px; height: 96px; object-fit: contain;
  margin: 0 auto 4px; image-rendering: pixelated; background: #eee; }}
.card.changed {{ border-color: #d35400; background: #fff4e6; }}
.card figcaption {{ overflow-wrap: anywhere; }}
.detail {{ color: #666; }}
select {{ width: 100%; margin-top: 4px; }}
#confusion td, #confusion th {{ border: 1px solid #ccc; padding: 2px 8px; text-align: right; }}
#confusion {{ border-collapse: collapse; }} td.off {{ background: #fde2e2; }}
td.diag {{ background: #e2f5e2; }}
.bar {{ position: sticky; top: 0; background: white; padding: 6px 0; z-index: 1; }}
.facts {{ display: flex; gap: 3em; flex-wrap: wrap; }}
#status {{ margin-left: 1em; color: #2e7d32; }} #status.error {{ color: #c0392b; }}
</style></head>
<body>
<h1>cnnclf review</h1>
<p id="summary">{summary}</p>
<div class="bar"><button id="save" hidden>Save decisions</button>
<button id="download">Download decisions.csv</button>
<button id="accept">Relabel all to suggested</button> <span id="count">0 decisions</span>
<span id="status" role="status"></span></div>
<div class="facts"><div><h3>Most confused pairs</h3>{pairs}</div>
<div><h3>Confusion matrix (training images, out-of-fold)</h3>{matrix}</div></div>
{sections}
<script>
// Served by `cnnclf serve --review`, the page saves to the review folder and restores what
// was saved; opened as a file it can only download.
const served = location.protocol === "http:" || location.protocol === "https:";
let unshown = [];  // saved rows for images without a card here: kept, so a save loses none
let unsaved = false;
function cards() {{ return [...document.querySelectorAll(".card")]; }}
function decisions() {{
  const seen = new Set(), rows = [];
  for (const card of cards()) {{
    const path = card.dataset.path, value = card.querySelector("select").value;
    if (value === "keep" || seen.has(path)) continue;  // one row per image: --apply wants one
    seen.add(path);
    rows.push(value.startsWith("relabel:") ? [path, "relabel", value.slice(8)] : [path, value, ""]);
  }}
  return rows.concat(unshown);
}}
function mark(path, value) {{
  // An image can be in two sections (a label issue and a near duplicate): both cards agree.
  cards().filter((card) => card.dataset.path === path).forEach((card) => {{
    const select = card.querySelector("select");
    if ([...select.options].some((o) => o.value === value)) select.value = value;
  }});
}}
function refresh() {{
  cards().forEach((card) =>
    card.classList.toggle("changed", card.querySelector("select").value !== "keep"));
  const n = decisions().length;
  document.getElementById("count").textContent = n + (n === 1 ? " decision" : " decisions") +
    (unshown.length ? ` (${{unshown.length}} saved for images not shown here)` : "");
}}
function say(text, error) {{
  const status = document.getElementById("status");
  status.textContent = text;
  status.className = error ? "error" : "";
}}
function quote(field) {{
  return /[",\\n\\r]/.test(field) ? '"' + field.replace(/"/g, '""') + '"' : field;
}}
function csvText() {{
  return [["path", "action", "label"], ...decisions()].map((r) => r.map(quote).join(","))
    .join("\\n") + "\\n";
}}
function parseCsv(text) {{
  const rows = [];
  let row = [], field = "", quoted = false;
  text = text.replace(/^\\ufeff/, "");
  for (let i = 0; i < text.length; i++) {{
    const c = text[i];
    if (quoted) {{
      if (c !== '"') field += c;
      else if (text[i + 1] === '"') {{ field += '"'; i++; }}
      else quoted = false;
    }} else if (c === '"') quoted = true;
    else if (c === ",") {{ row.push(field); field = ""; }}
    else if (c === "\\n" || c === "\\r") {{
      if (c === "\\r" && text[i + 1] === "\\n") i++;
      row.push(field); rows.push(row); row = []; field = "";
    }} else field += c;
  }}
  if (field || row.length) {{ row.push(field); rows.push(row); }}
  return rows;
}}
function headers(extra) {{
  const result = new Headers(extra || {{}});
  const token = sessionStorage.getItem("cnnclf-token");  // the serve page's, same origin
  if (token) result.set("Authorization", "Bearer " + token);
  return result;
}}
async function problem(response) {{
  try {{ return (await response.json()).error || response.statusText; }}
  catch (e) {{ return response.status + " " + response.statusText; }}
}}
async function restore() {{
  const response = await fetch("decisions", {{ headers: headers(), cache: "no-store" }});
  if (!response.ok) throw new Error(await problem(response));
  const [header, ...rows] = parseCsv(await response.text());
  const at = (row, name) => (row[(header || []).indexOf(name)] || "").trim();
  const shown = new Set(cards().map((card) => card.dataset.path));
  unshown = [];
  let restored = 0;
  for (const row of rows) {{
    const path = at(row, "path"), action = at(row, "action"), label = at(row, "label");
    if (!path || !action || action === "keep") continue;
    restored++;
    if (shown.has(path)) mark(path, action === "relabel" ? "relabel:" + label : action);
    else unshown.push([path, action, label]);
  }}
  refresh();
  if (restored) say(`restored ${{restored}} saved decision${{restored === 1 ? "" : "s"}}`);
}}
async function save() {{
  const response = await fetch("decisions", {{
    method: "POST", headers: headers({{ "Content-Type": "text/csv" }}), body: csvText(),
  }});
  if (!response.ok) throw new Error(await problem(response));
  const answer = await response.json();
  unsaved = false;
  say(`saved ${{answer.saved}} decision${{answer.saved === 1 ? "" : "s"}} to ${{answer.file}}`);
}}
function changed() {{
  unsaved = true;
  refresh();
  if (served) say("not saved yet");
}}
window.addEventListener("beforeunload", (event) => {{
  if (served && unsaved) event.preventDefault();  // the browser asks before marks are lost
}});
document.addEventListener("change", (event) => {{
  const card = event.target.closest(".card");
  if (card) mark(card.dataset.path, event.target.value);
  changed();
}});
document.getElementById("accept").addEventListener("click", () => {{
  document.querySelectorAll("#label .card").forEach((card) => {{
    // "" is a suggestion too (multi-label: no label); a card without one has no attribute.
    if ("hasSuggestion" in card.dataset)
      mark(card.dataset.path, "relabel:" + card.dataset.suggested);
  }});
  changed();
}});
document.getElementById("download").addEventListener("click", () => {{
  const blob = new Blob([csvText()], {{ type: "text/csv" }});
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = "decisions.csv";
  document.body.appendChild(link);
  link.click();
  link.remove();
}});
document.getElementById("save").addEventListener("click", () => {{
  save().catch((error) => say("not saved: " + error.message, true));
}});
refresh();
if (served) {{
  document.getElementById("save").hidden = false;
  restore().catch((error) => say("saved decisions not loaded: " + error.message, true));
}}
</script>
</body></html>
"""
