"""`cnnclf serve --review DIR`: a review's gallery on the server, saving a person's decisions
into the review folder instead of the Downloads folder.

Routes (beside the model's, or alone when no --model is given: then no model, no TensorFlow):
    GET  /review/              the gallery, DIR/index.html as `cnnclf review` wrote it (with a
                               token: a form that asks for it, then loads the gallery with it)
    GET  /review/index.html    the gallery itself (needs the token, if there is one)
    GET  /review/decisions     DIR/decisions.csv as saved (a header alone before any save)
    POST /review/decisions     a decisions.csv body (what the page's Download gives) -> saved

A saved body passes every check `cnnclf review --apply` makes before anything moves (the
header, one row per image, known actions and classes, each image one of the review's data as
it is now), so a saved file is one `--apply` accepts; a refused one is a 400 (not a CSV of
decisions) or 422 (a bad row) whose one line names the row. Keep rows are checked too. What
is saved is what was checked, never the body's bytes: the parsed rows, written again by
csv.writer as `path,action,label` alone, each path as the review's data writes it (so
`hstripes/../hstripes/x.png` is saved as `hstripes/x.png`, the name the page matches).

Several processes may save into one folder (two servers, or --workers with --model): each
save checks and writes under an flock on DIR/.decisions.csv.lock, and replaces
DIR/decisions.csv by one rename of a temporary file of its own (write_atomically_unique), so
a reader sees the old file or the new one, whole. The body's paths are only compared with
the review's data: one outside it is refused before the file system is asked about it, and
nothing is read from or moved at any of them. A review folder moved or deleted while served
is a 410 naming it, on every route.

The gallery holds the images and their paths, so with a token it is not public: /review/ is
then a form, as the model page's is, and the page's requests carry the token it stores. Saving
changes files, so it is refused from any page but the server's own even when --cors-origin
lets other origins call the model API.
"""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import io
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio.to_thread
from fastapi import Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from cnnclf.data.label_files import is_label_file, read_label_file
from cnnclf.data.listing import is_image_name
from cnnclf.errors import CnnclfError, ConfigError, DataError
from cnnclf.review import apply
from cnnclf.serve.budget import BodyBudget
from cnnclf.serve.errors import add_error_handlers, token_check
from cnnclf.serve.hosts import HostOriginGuard, allowed_hosts, origin_allowed
from cnnclf.serve.settings import ServeSettings
from cnnclf.serve.uploads import RequestError, body_cost, read_body
from cnnclf.training.filesystem import LockHeld, release_lock, take_lock, write_atomically_unique

DECISIONS_FILE = "decisions.csv"
PLAN_FILE = "review.json"  # review/run.py's, read here without importing the review's run
PAGE_FILE = "index.html"
DECISIONS_HEADER = b"path,action,label\n"
LOCK_FILE = ".decisions.csv.lock"  # one save at a time, across every process serving DIR
LOCK_WAIT_SECONDS = 10.0  # a save takes milliseconds: longer means a stuck process holds it
MAX_DECISIONS_BYTES = 4 * 2**20  # ~25,000 rows; a larger file is a case for --apply itself
NO_STORE = {"Cache-Control": "no-store"}
log = logging.getLogger("cnnclf")


@dataclass(frozen=True)
class ReviewFolder:
    """A review folder as `cnnclf review` wrote it: its plan (the data, the classes)."""

    path: Path
    plan: dict

    @property
    def class_names(self) -> list[str]:
        return list(self.plan["class_names"])


def open_review(folder: str | Path) -> ReviewFolder:
    """The review folder `--review` names, checked before anything else starts.

    Raises:
        ConfigError: one line naming the folder and what it lacks.
    """
    path = Path(folder)
    if not path.is_dir():
        what = "does not exist" if not path.exists() else "is not a folder"
        raise ConfigError(f"--review {folder}: {what}; give a folder `cnnclf review` wrote")
    try:
        plan = json.loads((path / PLAN_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            f"--review {folder}: not a review folder (no {PLAN_FILE}); give a folder "
            "`cnnclf review` wrote"
        ) from None
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"--review {folder}: {PLAN_FILE} cannot be read ({exc}); run the review again"
        ) from None
    if not isinstance(plan, dict) or not _names(plan.get("class_names")):
        raise ConfigError(f"--review {folder}: {PLAN_FILE} lists no classes; run the review again")
    if not (path / PAGE_FILE).is_file():
        raise ConfigError(
            f"--review {folder}: no {PAGE_FILE} yet (the review has not finished); run "
            "`cnnclf review` again with --out on this folder to finish it"
        )
    return ReviewFolder(path.resolve(), plan)


def _names(value) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(n, str) for n in value)


def check_decisions(review: ReviewFolder, body: bytes) -> list[apply.Decision]:
    """Every row of `body`, each path as the review's data writes it; raises RequestError as
    `--apply` would refuse the file (400: not decisions at all; 422: a row it names)."""
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise RequestError(400, f"{DECISIONS_FILE}: not UTF-8 text") from None
    try:
        header: list[str] | None = next(csv.reader(io.StringIO(text)), [])
    except csv.Error:
        header = None  # unreadable as CSV: parse_rows names it (422)
    if header is not None and not {"path", "action"} <= set(header):
        raise RequestError(
            400, _one_line(f"{DECISIONS_FILE}: header must be path,action,label (got {header})")
        )
    try:
        rows = _as_the_data_names_them(
            review, apply.parse_rows(text, DECISIONS_FILE, review.class_names)
        )
        apply.plan([d for d in rows if d.action != "keep"], review.plan)
    except CnnclfError as exc:
        raise RequestError(422, _one_line(str(exc))) from None
    return rows


def _as_the_data_names_them(
    review: ReviewFolder, rows: list[apply.Decision]
) -> list[apply.Decision]:
    """`rows` with each path replaced by the review's own string for that image, which the
    page's cards carry; a path naming none of the review's images is refused (DataError)."""
    images = _Images(review)
    result: list[apply.Decision] = []
    first_row: dict[str, str] = {}  # image -> the row that decides it
    for d in rows:
        found = images.find(d.path)
        if found is None:
            raise DataError(f"{d.where}: {d.given} is not an image of this review's data")
        earlier = first_row.setdefault(found, d.where)
        if earlier != d.where:  # one image written two ways: parse_rows compared them as given
            raise DataError(
                f"{d.where}: {d.given} is {found}, decided on {earlier.rsplit(': ', 1)[-1]} "
                "already; keep one row per image"
            )
        result.append(dataclasses.replace(d, path=found))
    return result


class _Images:
    """Which of the review's images a path names, by comparing strings with the data's own
    (the file system is asked only about paths inside a class folder of the review)."""

    def __init__(self, review: ReviewFolder):
        self.classes = set(review.class_names)
        self.listed: set[str] = set()  # a label file's images, as it names them
        self.folders: list[tuple[str, str]] = []  # (root as the data writes it, resolved)
        for key in ("train_dir", "test_dir"):
            root = review.plan.get(key)
            if root is None:
                continue
            if is_label_file(root):
                self.listed.update(row.path for row in read_label_file(root, f"data.{key}").rows)
            else:
                root = os.path.normpath(os.path.abspath(root))
                self.folders.append((root, os.path.realpath(root)))

    def find(self, path: str) -> str | None:
        path = os.path.normpath(os.path.abspath(path))
        if path in self.listed:
            return path
        for root, resolved in self.folders:
            for base in (root, resolved):
                if path.startswith(base + os.sep):
                    return self._in_class_folder(root, path[len(base) + 1 :].split(os.sep))
        return None

    def _in_class_folder(self, root: str, parts: list[str]) -> str | None:
        """An image the data's listing would give: in a class folder, no dot-names on the way."""
        if len(parts) < 2 or parts[0] not in self.classes or not is_image_name(parts[-1]):
            return None
        if any(part.startswith(".") for part in parts):
            return None
        path = os.path.join(root, *parts)
        return path if os.path.isfile(path) else None


def decisions_csv(rows: list[apply.Decision]) -> bytes:
    """The file saved: `path,action,label` and nothing else of the body (no extra columns, no
    cell the checks did not read); a relabel's classes in class order, as the page writes them."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["path", "action", "label"])
    for d in rows:
        writer.writerow([d.path, d.action, " ".join(d.classes) if d.action == "relabel" else ""])
    return buffer.getvalue().encode("utf-8")


def _one_line(message: str) -> str:
    """A message that may quote a client's cell, safe as one line."""
    return "".join(c if c.isprintable() else "?" for c in message)


def save_decisions(review: ReviewFolder, body: bytes) -> int:
    """Checks `body` and makes the rows checked DIR/decisions.csv by one rename, one process
    at a time; returns the number of rows that change something."""
    with _folder_present(review), _save_lock(review):
        if not (review.path / PLAN_FILE).is_file():
            raise _gone(review, PLAN_FILE)
        rows = check_decisions(review, body)
        data = decisions_csv(rows)
        write_atomically_unique(review.path / DECISIONS_FILE, lambda f: f.write(data))
    return sum(d.action != "keep" for d in rows)


@contextmanager
def _save_lock(review: ReviewFolder) -> Iterator[None]:
    """The flock every process serving this folder takes to save: the check and the rename
    happen together, so no save replaces a file between another's check and its rename."""
    lock, deadline = review.path / LOCK_FILE, time.monotonic() + LOCK_WAIT_SECONDS
    while True:
        try:
            fd = take_lock(lock)
            break
        except LockHeld:
            if time.monotonic() > deadline:
                raise RequestError(
                    503,
                    f"another process has been saving decisions for {LOCK_WAIT_SECONDS:g} s "
                    "(its lock is DIR/.decisions.csv.lock); try again",
                ) from None
            time.sleep(0.005)
    try:
        yield
    finally:
        release_lock(lock, fd)


def _gone(review: ReviewFolder, lost: str | None = None) -> RequestError:
    what = f"has no {lost} any more" if lost and review.path.is_dir() else "no longer exists"
    return RequestError(
        410,
        f"the review folder {review.path} {what}; run cnnclf serve --review on a review folder",
    )


@contextmanager
def _folder_present(review: ReviewFolder) -> Iterator[None]:
    """Turns the review folder moved or deleted under the server into one line (410)."""
    try:
        if not review.path.is_dir():
            raise _gone(review)
        yield
    except (FileNotFoundError, NotADirectoryError):
        if review.path.is_dir():
            raise  # something else is missing: not this message's case
        raise _gone(review) from None


def _read_page(review: ReviewFolder) -> bytes:
    with _folder_present(review):
        try:
            return (review.path / PAGE_FILE).read_bytes()
        except FileNotFoundError:
            raise _gone(review, PAGE_FILE) from None


def _read_saved(review: ReviewFolder) -> bytes:
    with _folder_present(review):
        if not (review.path / PLAN_FILE).is_file():
            raise _gone(review, PLAN_FILE)
        try:
            return (review.path / DECISIONS_FILE).read_bytes()
        except FileNotFoundError:
            return DECISIONS_HEADER  # nothing saved yet


def add_review_routes(
    app: FastAPI,
    review: ReviewFolder,
    settings: ServeSettings,
    api: list,
    budget: BodyBudget | None = None,
) -> None:
    """The /review/ routes on `app` (the model's app, or `create_review_app`'s).

    Args:
        api: the token dependency the model's API routes use.
        budget: the bound on request bodies in memory that the app's other routes share.
    """
    budget = budget or BodyBudget(settings.max_bodies_bytes)
    limit = min(MAX_DECISIONS_BYTES, settings.max_upload_bytes)
    saving = asyncio.Lock()  # one save in a thread at a time; the flock orders processes

    @app.get("/review/", include_in_schema=False)
    async def review_page():
        if settings.token:
            return HTMLResponse(_TOKEN_PAGE, headers=NO_STORE)
        return await gallery()

    @app.get("/review/index.html", include_in_schema=False, dependencies=api)
    async def gallery():
        page = await anyio.to_thread.run_sync(_read_page, review)
        return HTMLResponse(page, headers=NO_STORE)

    @app.get("/review/decisions", dependencies=api, summary="The review's saved decisions.csv")
    async def saved_decisions():
        data = await anyio.to_thread.run_sync(_read_saved, review)
        return Response(data, media_type="text/csv; charset=utf-8", headers=NO_STORE)

    @app.post(
        "/review/decisions",
        dependencies=api,
        summary="Save decisions.csv into the review folder",
        description="The body is a decisions.csv (`path,action,label`), checked as "
        "`cnnclf review --apply` checks it; only the server's own page may save.",
    )
    async def save(request: Request):
        _same_origin(request)
        if not await anyio.to_thread.run_sync(review.path.is_dir):
            raise _gone(review)  # before the body is read: nothing can be saved
        try:
            async with budget.hold(body_cost(request, limit)):
                body = bytes(await read_body(request, limit))
        except RequestError as exc:
            if exc.status != 413:
                raise
            raise RequestError(
                413,
                f"{DECISIONS_FILE} over the {limit / 2**20:.3g} MB a save may hold (4 MB, "
                "or --max-upload-mb if less); download it and run cnnclf review --apply on it",
            ) from None
        async with saving:
            count = await anyio.to_thread.run_sync(save_decisions, review, body)
        log.info(f"saved {count} decisions to {review.path / DECISIONS_FILE}")
        return {"saved": count, "file": DECISIONS_FILE}


def _same_origin(request: Request) -> None:
    """Saving writes into the review folder: only the server's own page may, whatever
    --cors-origin allows (HostOriginGuard refused every other origin already without it)."""
    origin = request.headers.get("origin")
    if origin is not None and not origin_allowed(origin, request.headers.get("host"), ()):
        raise RequestError(
            403,
            _one_line(f"decisions are saved from this server's /review/ page only, not {origin!r}"),
        )


def create_review_app(
    review: ReviewFolder, settings: ServeSettings, on_ready: Callable[[], None] | None = None
) -> FastAPI:
    """A review served alone: the /review/ routes and the probes, behind the same Host/Origin
    guard and token as the model's app, without a model (TensorFlow never loads).

    Example:
        app = create_review_app(open_review("runs/review-demo"), ServeSettings())
    """

    @asynccontextmanager
    async def lifespan(app):
        if on_ready is not None:
            on_ready()
        yield

    app = FastAPI(
        title="cnnclf serve --review",
        lifespan=lifespan,
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    app.add_middleware(
        HostOriginGuard,
        allowed=allowed_hosts(settings.host, tuple(settings.allowed_hosts)),
        cors_origins=tuple(settings.cors_origins),  # saving checks its own origin anyway
    )
    add_error_handlers(app)

    @app.get("/", include_in_schema=False)
    async def index():
        return RedirectResponse("/review/")

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz():
        return {"status": "ready"}

    add_review_routes(app, review, settings, [Depends(token_check(settings.token))])
    return app


# With a token the gallery is not public; this form asks for it once (kept for the tab, as the
# model page keeps it) and replaces itself with the gallery fetched with it.
_TOKEN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>cnnclf review</title>
<link rel="icon" href="data:,">
<style>body { font-family: system-ui, sans-serif; margin: 2em; } #error { color: #c0392b; }</style>
</head><body>
<h1>cnnclf review</h1>
<form id="token-form">
  <label for="token">This server needs a token</label>
  <input id="token" type="password" autocomplete="off" required>
  <button type="submit">Use token</button>
</form>
<p id="error" role="alert"></p>
<script>
(() => {
  async function load(token) {
    const response = await fetch("index.html", {
      headers: { Authorization: "Bearer " + token }, cache: "no-store",
    });
    if (!response.ok) {
      let message = response.status + " " + response.statusText;
      try { message = (await response.json()).error || message; } catch (e) {}
      document.getElementById("error").textContent = message;
      return;
    }
    const page = await response.text();
    document.open();
    document.write(page);
    document.close();
  }
  document.getElementById("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const token = document.getElementById("token").value.trim();
    sessionStorage.setItem("cnnclf-token", token);
    load(token);
  });
  const saved = sessionStorage.getItem("cnnclf-token");
  if (saved) load(saved);
})();
</script>
</body></html>
"""
