"""`cnnclf serve --review DIR` through a real server: decisions saved into the review folder,
restored after a restart, refused as `--apply` refuses them; the serve protections (Host,
Origin, token, body size) hold; a review alone runs where TensorFlow cannot even be imported."""

import contextlib
import json
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
from helpers import _ready, communicate, free_port, run_cli, run_process, start_server, wait_for
from review_folder import make_review

GOOD = (
    "path,action,label\n{train}/hstripes/hstripes_001.png,relabel,vstripes\n"
    "{train}/checker/checker_002.bmp,remove,\n"
)
# (what the body does wrong, body, status, words of the one-line error)
BAD = [
    (
        "unknown class",
        "path,action,label\n{train}/hstripes/hstripes_001.png,relabel,cat\n",
        422,
        "decisions.csv: row 1: 'cat' is not a class of this review",
    ),
    (
        "two rows for one image",
        "path,action,label\n{train}/hstripes/hstripes_001.png,remove,\n"
        "{train}/hstripes/hstripes_001.png,relabel,vstripes\n",
        422,
        "row 2: {train}/hstripes/hstripes_001.png is decided on row 1 already",
    ),
    (
        "an image outside the review's data",
        "path,action,label\n/etc/passwd,remove,\n",
        422,
        "row 1: /etc/passwd is not an image of this review's data",
    ),
    ("no header", "a.png,remove,\n", 400, "header must be path,action,label"),
    ("not text", b"path,action,label\n\xff\xfe,remove,\n", 400, "not UTF-8 text"),
]


def without_tensorflow(tmp_path) -> dict:
    """An environment in which `import tensorflow` (and keras) fails as if not installed."""
    import os

    for name in ("tensorflow", "keras"):
        (tmp_path / "shim" / name).mkdir(parents=True)
        (tmp_path / "shim" / name / "__init__.py").write_text(
            f"raise ModuleNotFoundError(\"No module named '{name}'\", name='{name}')\n"
        )
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "shim"), os.getcwd()])}


def start_review_server(*args, env=None):
    """(process, base URL) of `cnnclf serve ARGS` without --model, once /readyz answers."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "cnnclf.cli", "serve", "--port", str(port), *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: _ready(process, url), "the review server's /readyz", timeout=60, poll=0.1)
    return process, url


def stop(process) -> str:
    process.terminate()
    _, err = communicate(process, "the server to stop", timeout=30)
    assert process.returncode == 0, err
    assert "Traceback" not in err, err
    return err


def call(url, path, body=None, headers=None):
    """(status, body bytes) of GET (or POST with `body`) `path`; errors are answers too."""
    data = body.encode() if isinstance(body, str) else body
    request = urllib.request.Request(url + path, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def error_line(answer: bytes) -> str:
    message = json.loads(answer)["error"]
    assert "\n" not in message and "Traceback" not in message, message
    return message


@pytest.mark.slow  # starts a server, twice
def test_save_restore_and_refusals_without_tensorflow(tmp_path):
    folder, train = make_review(tmp_path)
    env = without_tensorflow(tmp_path)
    good = GOOD.format(train=train)
    process, url = start_review_server("--review", folder, "--max-upload-mb", 0.01, env=env)
    try:
        status, page = call(url, "/")  # redirected to the gallery
        assert status == 200 and b"Save decisions" in page and b"hstripes_001.png" in page
        assert call(url, "/review/decisions") == (200, b"path,action,label\n")
        status, answer = call(url, "/review/decisions", good)
        assert status == 200, answer
        assert json.loads(answer) == {"saved": 2, "file": "decisions.csv"}
        for what, body, code, words in BAD:
            body = body.format(train=train) if isinstance(body, str) else body
            status, answer = call(url, "/review/decisions", body)
            assert status == code, (what, answer)
            assert words.format(train=train) in error_line(answer), what
        status, answer = call(url, "/review/decisions", good + "x" * 20_000)
        assert status == 413 and "over the 0.01 MB a save may hold" in error_line(answer)
        status, answer = call(url, "/review/decisions", good, {"Origin": "http://evil.example"})
        assert status == 403 and "evil.example" in error_line(answer)
        status, answer = call(url, "/review/decisions", good, {"Host": "evil.example"})
        assert status == 421, answer
        status, _ = call(url, "/review/decisions", good, {"Origin": url})  # the page's own
        assert status == 200
    finally:
        err = stop(process)
    assert "saved 2 decisions to" in err and "ModuleNotFoundError" not in err
    # Nothing refused replaced the saved file, and a restarted server hands it back.
    assert (folder / "decisions.csv").read_text() == good
    process, url = start_review_server("--review", folder, env=env)
    try:
        assert call(url, "/review/decisions") == (200, good.encode())
    finally:
        stop(process)
    result = run_cli("review", "--apply", folder / "decisions.csv", "--dry-run")
    assert result.exit_code == 0, result.output
    moves = [line for line in result.output.splitlines() if ": move " in line]
    assert len(moves) == 2 and "hstripes_001.png ->" in moves[0] and "_removed" in moves[1]


@pytest.mark.slow  # starts a server
def test_a_token_guards_the_gallery_and_saving_is_same_origin_only(tmp_path):
    folder, train = make_review(tmp_path)
    (tmp_path / "token").write_text("s3cret\n")
    process, url = start_review_server(
        "--review",
        folder,
        "--token-file",
        tmp_path / "token",
        "--cors-origin",
        "http://app.example",
    )
    token = {"Authorization": "Bearer s3cret"}
    try:
        status, page = call(url, "/review/")  # a form asking for the token, nothing of the data
        assert status == 200 and b"This server needs a token" in page and b"hstripes" not in page
        assert call(url, "/review/index.html")[0] == 401
        status, page = call(url, "/review/index.html", headers=token)
        assert status == 200 and b"hstripes_001.png" in page
        assert call(url, "/review/decisions")[0] == 401
        assert call(url, "/review/decisions", GOOD.format(train=train))[0] == 401
        # --cors-origin lets that page call the model API, never write into the review.
        status, answer = call(
            url, "/review/decisions", GOOD, {**token, "Origin": "http://app.example"}
        )
        assert status == 403 and "/review/ page only" in error_line(answer)
        status, _ = call(url, "/review/decisions", GOOD.format(train=train), token)
        assert status == 200
    finally:
        stop(process)


@pytest.mark.slow  # trains the session's binary bundle, starts a server with TensorFlow
def test_beside_a_model(tmp_path, binary_bundle):
    folder, train = make_review(tmp_path)
    other = "http://pages.example"
    process, url = start_server(binary_bundle, "--review", folder, "--cors-origin", other)
    try:
        assert call(url, "/")[0] == 200 and call(url, "/card")[0] == 200  # the model's page
        # --cors-origin opens the API to that origin, never the review's images and paths
        for path, shared in (("/healthz", True), ("/review/", False), ("/review/decisions", False)):
            request = urllib.request.Request(url + path, headers={"Origin": other})
            with urllib.request.urlopen(request, timeout=30) as response:
                allowed = response.headers.get("access-control-allow-origin")
            assert (allowed == other) is shared and (allowed is None) is not shared, path
        status, page = call(url, "/review/")
        assert status == 200 and b"hstripes_001.png" in page
        assert call(url, "/review/decisions", GOOD.format(train=train))[0] == 200
    finally:
        stop(process)
    assert (folder / "decisions.csv").read_text() == GOOD.format(train=train)


def test_a_bad_review_folder_is_one_line_and_exit_2_before_tensorflow(tmp_path):
    folder, _ = make_review(tmp_path)
    (tmp_path / "unfinished").mkdir()
    (tmp_path / "unfinished" / "review.json").write_text((folder / "review.json").read_text())
    (tmp_path / "empty").mkdir()
    (tmp_path / "file.txt").write_text("x")
    code = (
        "import sys\nfrom cnnclf.cli import main\ntry:\n    main()\nexcept SystemExit as e:\n"
        "    print('exit', e.code)\nprint('tensorflow' in sys.modules)\n"
    )
    for args, words in [
        (["--review", tmp_path / "missing"], "missing: does not exist"),
        (["--review", tmp_path / "file.txt"], "file.txt: is not a folder"),
        (["--review", tmp_path / "empty"], "empty: not a review folder (no review.json)"),
        (["--review", tmp_path / "unfinished"], "unfinished: no index.html yet"),
        (["--review", folder, "--workers", "2"], "--workers 2: a review served without --model"),
    ]:
        command = [sys.executable, "-c", code, "serve", *map(str, args)]
        result = run_process(command, f"serve {args}", timeout=60)
        assert result.stdout.split() == ["exit", "2", "False"], (args, result.stdout)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and words in lines[0], (args, result.stderr)


@pytest.mark.slow  # starts two servers
def test_two_servers_on_one_folder_save_whole_files(tmp_path):
    """Two processes saving into one review folder at once: every save answers 200 and a
    reader of decisions.csv only ever sees one of the two files, whole (each save has a
    temporary file of its own, renamed into place under the folder's flock)."""
    folder, train = make_review(tmp_path)
    bodies = [
        GOOD.format(train=train),
        f"path,action,label\n{train}/vstripes/vstripes_003.gif,relabel,checker\n",
    ]
    servers = [start_review_server("--review", folder) for _ in range(2)]
    file, seen, done = folder / "decisions.csv", set(), threading.Event()

    def read_meanwhile():
        deadline = time.monotonic() + 60
        while not done.is_set() and time.monotonic() < deadline:
            with contextlib.suppress(FileNotFoundError):  # before the first save
                seen.add(file.read_text(encoding="utf-8"))

    def post(n: int) -> int:
        _, url = servers[n % 2]
        return call(url, "/review/decisions", bodies[(n // 2) % 2])[0]

    reader = threading.Thread(target=read_meanwhile)
    reader.start()
    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            statuses = list(pool.map(post, range(120)))  # 2 servers x 60
    finally:
        done.set()
        reader.join(timeout=60)
        errors = [stop(process) for process, _ in servers]
    assert statuses == [200] * 120, Counter(statuses)
    assert seen and seen <= set(bodies), seen - set(bodies)
    assert not any("internal error" in err for err in errors), errors
    assert [p.name for p in folder.iterdir() if p.name.startswith(".")] == []


@pytest.mark.slow  # starts a server
def test_a_review_folder_moved_away_is_a_410_naming_it(tmp_path):
    folder, train = make_review(tmp_path)
    process, url = start_review_server("--review", folder)
    try:
        assert call(url, "/review/decisions", GOOD.format(train=train))[0] == 200
        folder.rename(tmp_path / "moved")
        for path, body in [
            ("/review/", None),
            ("/review/index.html", None),
            ("/review/decisions", None),
            ("/review/decisions", GOOD.format(train=train)),
        ]:
            status, answer = call(url, path, body)
            assert status == 410, (path, answer)
            assert error_line(answer) == (
                f"the review folder {folder.resolve()} no longer exists; run cnnclf serve "
                "--review on a review folder"
            )
    finally:
        err = stop(process)  # no traceback in the server's log
    assert "internal error" not in err, err
