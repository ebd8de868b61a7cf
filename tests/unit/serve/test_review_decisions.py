"""What `serve --review` saves: only rows checked as `--apply` checks them (keep rows too),
written again from the parsed rows in the review's own path form; saves from several writers
never break or mix the file; a field csv cannot read and a folder gone are one line each."""

import contextlib
import json
import shutil
import threading
import time

import pytest
from fastapi.testclient import TestClient
from helpers import run_cli
from review_folder import make_review

from cnnclf.errors import DataError
from cnnclf.review import apply
from cnnclf.serve.review import (
    DECISIONS_FILE,
    ReviewFolder,
    check_decisions,
    create_review_app,
    open_review,
    save_decisions,
)
from cnnclf.serve.settings import ServeSettings
from cnnclf.serve.uploads import RequestError

BASE_URL = "http://127.0.0.1"  # the Host guard refuses TestClient's "testserver"


@pytest.fixture
def review(tmp_path):
    folder, train = make_review(tmp_path)
    return open_review(folder), train


def _refused(review, body: str) -> RequestError:
    with pytest.raises(RequestError) as caught:
        save_decisions(review, body.encode())
    assert "\n" not in caught.value.message
    return caught.value


@pytest.mark.parametrize(
    ("row", "words"),
    [
        ("/etc/passwd,keep,", "row 2: /etc/passwd is not an image of this review's data"),
        ('"=HYPERLINK(""http://x"")",keep,', 'row 2: =HYPERLINK("http://x") is not an image'),
        ("{train}/hstripes/../../../etc/passwd,keep,", "is not an image of this review's data"),
        ("{train}/hstripes/.hidden.png,keep,", "is not an image of this review's data"),
        ("{train}/review.json,keep,", "is not an image of this review's data"),
        ("{train}/hstripes/nothere.png,keep,", "nothere.png is not an image"),
        # One image written two ways is still two decisions for it.
        ("{train}/vstripes/../hstripes/hstripes_001.png,keep,", "decided on row 1 already"),
    ],
)
def test_every_row_keep_rows_too_must_name_an_image_of_the_review(review, row, words):
    review, train = review
    body = f"path,action,label\n{train}/hstripes/hstripes_001.png,remove,\n{row}\n"
    error = _refused(review, body.format(train=train))
    assert error.status == 422 and words in error.message, error.message
    assert not (review.path / DECISIONS_FILE).exists()


def test_the_file_saved_is_the_rows_checked_rewritten_not_the_body(review):
    review, train = review
    body = (
        "path,action,label,note\r\n"  # a spreadsheet's CRLF, and a column of its own
        f"{train}/hstripes/../hstripes/hstripes_001.png,relabel, vstripes ,=cmd|x\r\n"
        f"{train}/checker/checker_002.bmp,remove,=HYPERLINK(1),=cmd|y\r\n"
        f"{train}/vstripes/./vstripes_003.gif,keep,,\r\n"
    )
    assert save_decisions(review, body.encode()) == 2  # the keep row changes nothing
    saved = (review.path / DECISIONS_FILE).read_text(encoding="utf-8")
    assert saved == (
        "path,action,label\n"
        f"{train}/hstripes/hstripes_001.png,relabel,vstripes\n"
        f"{train}/checker/checker_002.bmp,remove,\n"
        f"{train}/vstripes/vstripes_003.gif,keep,\n"
    )
    # The paths are the gallery's own (its cards carry them), so the page matches every row.
    page = (review.path / "index.html").read_text(encoding="utf-8")
    assert f"{train}/hstripes/hstripes_001.png" in page
    # ... and `--apply` takes the file as saved.
    chosen = apply.read_decisions(review.path / DECISIONS_FILE, review.class_names)
    moves = apply.plan(chosen, review.plan).moves
    assert [m[0] for m in moves] == [
        f"{train}/hstripes/hstripes_001.png",
        f"{train}/checker/checker_002.bmp",
    ]
    result = run_cli("review", "--apply", review.path / DECISIONS_FILE, "--dry-run")
    assert result.exit_code == 0 and "dry run: 2 moves" in result.output, result.output


def test_a_field_over_the_csv_limit_is_one_line_naming_the_row(review, tmp_path):
    review, train = review
    body = f"path,action,label\n{train}/hstripes/hstripes_001.png,remove,\nx,keep,{'y' * 140_000}\n"
    error = _refused(review, body)
    assert error.status == 422
    assert error.message.startswith("decisions.csv: row 2: not readable as CSV (field larger")
    big = tmp_path / "big.csv"
    big.write_text(body)
    with pytest.raises(DataError, match=r"big.csv: row 2: not readable as CSV"):
        apply.read_decisions(big, review.class_names)
    header = tmp_path / "header.csv"
    header.write_text("path,action,label" + "z" * 140_000 + "\n")
    with pytest.raises(DataError, match=r"header.csv: header: not readable as CSV"):
        apply.read_decisions(header, review.class_names)
    result = run_cli("review", "--apply", big, "--review", review.path)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "big.csv: row 2: not readable as CSV" in lines[0], result.output


def test_concurrent_saves_each_land_whole(review):
    """Many writers at once (each save takes the folder's flock, as another process's does):
    every save succeeds, and a reader only ever sees one of the two files whole."""
    review, train = review
    bodies = [
        f"path,action,label\n{train}/hstripes/hstripes_001.png,relabel,vstripes\n",
        f"path,action,label\n{train}/checker/checker_002.bmp,remove,\n"
        f"{train}/vstripes/vstripes_003.gif,relabel,checker\n",
    ]
    file, failures, seen, done = review.path / DECISIONS_FILE, [], set(), threading.Event()

    def writer(body):
        try:
            for _ in range(15):
                save_decisions(review, body.encode())
        except Exception as exc:  # reported by the assertion below
            failures.append(repr(exc))

    def reader():
        deadline = time.monotonic() + 20
        while not done.is_set() and time.monotonic() < deadline:
            with contextlib.suppress(FileNotFoundError):  # before the first save
                seen.add(file.read_text(encoding="utf-8"))

    threads = [threading.Thread(target=writer, args=(bodies[i % 2],)) for i in range(6)]
    watcher = threading.Thread(target=reader)
    watcher.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    done.set()
    watcher.join(timeout=30)
    assert failures == []
    assert seen and seen <= set(bodies), seen - set(bodies)
    assert sorted(p.name for p in review.path.iterdir() if p.name.startswith(".")) == []


def test_a_review_folder_gone_is_one_line_on_every_route(review, tmp_path, caplog):
    review, train = review
    app = create_review_app(review, ServeSettings())
    with TestClient(app, base_url=BASE_URL) as client:
        body = f"path,action,label\n{train}/hstripes/hstripes_001.png,remove,\n"
        assert client.post("/review/decisions", content=body).status_code == 200
        shutil.move(review.path, tmp_path / "moved")
        for method, path in [
            ("GET", "/review/"),
            ("GET", "/review/index.html"),
            ("GET", "/review/decisions"),
            ("POST", "/review/decisions"),
        ]:
            answer = client.request(method, path, content=body if method == "POST" else None)
            assert answer.status_code == 410, (path, answer.text)
            assert answer.json()["error"] == (
                f"the review folder {review.path} no longer exists; run cnnclf serve --review "
                "on a review folder"
            ), path
    assert "internal error" not in caplog.text and "Traceback" not in caplog.text


def test_a_header_csv_cannot_read_is_not_a_500(review):
    review, _ = review
    with pytest.raises(RequestError) as caught:
        check_decisions(review, ("path,action,label" + "z" * 140_000 + "\n").encode())
    assert caught.value.status == 422 and "header: not readable as CSV" in caught.value.message


def test_a_label_file_review_saves_the_paths_its_rows_name(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.csv").write_text("path,label\nimg/a.png,cat\nimg/b.png,dog\n")
    folder = tmp_path / "review"
    folder.mkdir()
    plan = {"train_dir": str(data / "train.csv"), "test_dir": None, "class_names": ["cat", "dog"]}
    (folder / "review.json").write_text(json.dumps(plan))
    review = ReviewFolder(folder, plan)
    body = f"path,action,label\n{data}/img/../img/a.png,relabel,dog\n{data}/img/c.png,keep,\n"
    error = _refused(review, body)
    assert error.status == 422 and f"row 2: {data}/img/c.png is not an image" in error.message
    assert save_decisions(review, body.rsplit(f"{data}/img/c.png", 1)[0].encode()) == 1
    saved = (folder / DECISIONS_FILE).read_text()
    assert saved == f"path,action,label\n{data}/img/a.png,relabel,dog\n"
    chosen = apply.read_decisions(folder / DECISIONS_FILE, ["cat", "dog"])
    assert apply.plan(chosen, plan).copies == {
        str(data / "train.reviewed.csv"): b"path,label\nimg/a.png,dog\nimg/b.png,dog\n"
    }
