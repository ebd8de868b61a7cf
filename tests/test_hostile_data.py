"""Hostile data folders: entries that are no image file, links, huge images and split folders.

Nothing here may hang, exhaust memory, crash, or quietly train the wrong thing. Whatever could
hang runs under a timeout (a thread or a subprocess), so a regression fails instead of stalling
the suite.
"""

import contextlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from helpers import HOSTILE, make_tree, run_cli, write_config, write_hostile_entry, write_large_png
from PIL import Image

from cnnclf.data.decode import ImageSpec, load_image
from cnnclf.data.layout import discover
from cnnclf.data.listing import list_images
from cnnclf.errors import DataError, ImageError

SPEC = ImageSpec((16, 16))


def data_config(tree: Path, test_dir=True, **kw):
    return SimpleNamespace(
        train_dir=str(tree / "training_set"),
        test_dir=str(tree / "test_set") if test_dir else None,
        validation_split=0.25,
        **kw,
    )


def within(seconds, fn, *args):
    """fn(*args) in a thread; fails the test if it has not returned after `seconds`."""
    outcome = {}

    def target():
        try:
            outcome["value"] = fn(*args)
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        pytest.fail(f"{getattr(fn, '__name__', fn)} still running after {seconds} s (a hang)")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def release_fifo_readers(path: Path) -> None:
    """Unblocks a reader stuck opening the FIFO `path` (a regression), so the suite can exit."""
    with contextlib.suppress(OSError):
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))


def cli_subprocess(*args, timeout=60, memory_gb=4):
    """`cnnclf ARGS` in a child process with a time and address-space limit."""

    def limit():
        import resource

        cap = memory_gb * 2**30
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    try:
        return subprocess.run(
            [sys.executable, "-m", "cnnclf.cli", *map(str, args)],
            capture_output=True,
            text=True,
            timeout=timeout,
            preexec_fn=limit,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"cnnclf {' '.join(map(str, args))} still running after {timeout} s")


@pytest.fixture
def tree(tmp_path):
    return make_tree(tmp_path / "data", n_train=6, n_test=3)


# ------------------------------------------------------------------------------------------
# 1. Only regular files are images.


def test_listing_skips_and_reports_what_is_no_regular_file(tree):
    folder = tree / "training_set" / "vstripes"
    entries = {case: write_hostile_entry(case, folder) for case in HOSTILE}
    skipped = {}
    images = within(30, list_images, folder, skipped)
    assert len(images) == 6 and all(Path(p).parent == folder for p in images)
    assert "a FIFO" in skipped[str(entries["fifo"])]
    assert "symbolic link to a character device" in skipped[str(entries["device_link"])]
    assert "dangling symbolic link" in skipped[str(entries["dangling_link"])]
    assert "already listed" in skipped[str(entries["loop_link"])]


@pytest.mark.parametrize(
    "case, reason",
    [
        ("fifo", "not a regular file (a FIFO)"),
        ("device_link", "character device"),
        ("dangling_link", "dangling symbolic link"),
    ],
)
def test_the_decoder_refuses_non_regular_files_without_opening_them(tmp_path, case, reason):
    path = write_hostile_entry(case, tmp_path)
    try:
        with pytest.raises(ImageError) as info:
            within(30, load_image, str(path), SPEC)
    finally:
        if case == "fifo":
            release_fifo_readers(path)
    assert info.value.path == str(path) and reason in info.value.reason


@pytest.mark.slow
def test_predict_reports_a_fifo_and_predicts_the_rest(tmp_path, binary_bundle, binary_tree):
    inbox = tmp_path / "inbox"
    fifo = write_hostile_entry("fifo", inbox)
    good = sorted((binary_tree / "test_set" / "vstripes").iterdir())[0]
    shutil.copy(good, inbox / good.name)
    try:
        result = within(
            120, run_cli, "predict", "--model", binary_bundle, "--format", "json", inbox
        )
    finally:
        release_fifo_readers(fifo)
    assert result.exit_code == 1
    assert [Path(r["path"]).parent for r in json.loads(result.stdout)] == [inbox]
    assert f"{fifo}: not a regular file (a FIFO)" in result.stderr


@pytest.mark.slow
def test_training_is_not_hung_by_a_fifo(tmp_path, tree):
    fifo = write_hostile_entry("fifo", tree / "training_set" / "hstripes")
    config = write_config(tmp_path / "c.yaml", tree)
    try:
        result = within(300, run_cli, "train", "--config", config, "--out", tmp_path / "b")
    finally:
        release_fifo_readers(fifo)
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("case", ["fifo", "device_link"])
def test_check_data_neither_hangs_nor_reads_a_device(tree, case):
    path = write_hostile_entry(case, tree / "training_set" / "vstripes")
    result = cli_subprocess("check-data", "--format", "json", tree, memory_gb=2)
    assert result.returncode == 0, result.stderr
    problems = [p for p in json.loads(result.stdout)["problems"] if p["path"] == str(path)]
    assert [p["kind"] for p in problems] == ["not_listed"]
    assert problems[0]["severity"] == "error" and "not a regular file" in problems[0]["detail"]


# ------------------------------------------------------------------------------------------
# 2. Decode memory is bounded.


def test_eight_huge_pngs_decode_in_bounded_memory(tmp_path):
    # 4800x4800 RGBA: ~90 MB each once decoded from a ~90 KB file. Before the decode budget and
    # the resize-before-copy path, eight through eight threads peaked at 3.2 GB.
    path = write_large_png(tmp_path / "huge.png", 4800, 4800)
    script = textwrap.dedent(f"""
        import resource
        from concurrent.futures import ThreadPoolExecutor
        from cnnclf.data.decode import ImageSpec, load_image
        spec = ImageSpec((64, 64))
        with ThreadPoolExecutor(8) as pool:
            arrays = list(pool.map(lambda p: load_image(p, spec), [{str(path)!r}] * 8))
        assert all(a.shape == (64, 64, 3) for a in arrays)
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
    """)
    try:
        done = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
        )
    except subprocess.TimeoutExpired:
        pytest.fail("decoding eight large PNGs took over 120 s")
    assert done.returncode == 0, done.stderr
    # ~400 MB on a quiet machine, 1389 MB once in a full suite on a loaded one (decodes then
    # overlap differently); the old code's 3.2 GB stays far outside the bound.
    assert int(done.stdout) < 2048, f"peak RSS {done.stdout.strip()} MB"


@pytest.mark.parametrize("mode, orientation", [("RGBA", 1), ("RGBA", 6), ("RGB", 8), ("P", 1)])
def test_large_images_decode_like_small_ones(tmp_path, mode, orientation):
    # Above 4 MP the decoder resizes before compositing and orienting (no full-size copies);
    # that must match compositing and orienting first, up to rounding.
    y, x = np.mgrid[0:2200, 0:2100]
    pixels = np.stack(
        [
            (x // 300 % 2) * 200 + 20,
            (y // 400 % 2) * 180 + 30,
            (x + y) % 256,
            np.clip(x // 8, 0, 255),
        ],
        axis=-1,
    ).astype(np.uint8)
    image = Image.fromarray(pixels, "RGBA")
    if mode == "P":
        image = image.convert("RGB").convert("P", palette=Image.Palette.ADAPTIVE)
    else:
        image = image.convert(mode)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "large.png"
    image.save(path, exif=exif.tobytes(), **({"transparency": 0} if mode == "P" else {}))
    expected = _reference_decode(path, (48, 40))
    got = load_image(str(path), ImageSpec((48, 40)))
    assert got.shape == expected.shape
    assert np.abs(got.astype(int) - expected).max() <= 3


def _reference_decode(path, size):
    """Orient, composite on white, convert, then resize: the full-size path, spelled out."""
    from PIL import ImageOps

    with Image.open(path) as image:
        image = ImageOps.exif_transpose(image)
        image = image.convert("RGBA")
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, image).convert("RGB")
        return np.asarray(image.resize((size[1], size[0]), Image.Resampling.BILINEAR), int)


# ------------------------------------------------------------------------------------------
# 3. Symbolic links and folders.


def test_a_linked_folder_that_puts_images_under_two_classes_stops_discover(tree):
    (tree / "training_set" / "vstripes" / "alias").symlink_to("../hstripes")
    with pytest.raises(DataError) as info:
        discover(data_config(tree), seed=1)
    message = str(info.value)
    assert message.startswith("data.train_dir: ") and "\n" not in message
    assert str(tree / "training_set" / "vstripes" / "alias") in message
    assert str(tree / "training_set" / "hstripes") in message
    assert "hstripes and vstripes" in message or "vstripes and hstripes" in message


def test_the_same_file_twice_in_one_class_is_kept_once_and_reported(tree):
    folder = tree / "training_set" / "hstripes"
    first = sorted(folder.iterdir())[0]
    (folder / "zz_again.jpg").symlink_to(first.name)
    dataset = discover(data_config(tree), seed=1)
    assert dataset.train.paths.count(str(first)) == 1
    assert str(folder / "zz_again.jpg") not in dataset.train.paths
    assert dataset.skipped[str(folder / "zz_again.jpg")].startswith(f"same file as {first}")


@pytest.mark.parametrize("case", HOSTILE)
def test_discover_records_what_it_skipped(tree, case):
    path = write_hostile_entry(case, tree / "training_set" / "vstripes")
    dataset = within(30, discover, data_config(tree), 1)
    assert dataset.train.counts(dataset.class_names) == {"hstripes": 6, "vstripes": 6}
    assert list(dataset.skipped) == [str(path)]
    clean = discover(data_config(make_tree(tree.parent / "clean", n_train=6, n_test=3)), 1)
    assert clean.skipped == {}


def test_a_loop_through_the_split_folder_is_refused_not_followed(tree):
    # sneaker/up -> .. reaches every class again from inside one of them.
    (tree / "training_set" / "vstripes" / "up").symlink_to("..")
    with pytest.raises(DataError, match="same file, under classes"):
        within(30, discover, data_config(tree), 1)


@pytest.mark.parametrize(
    "split, key", [("training_set", "data.train_dir"), ("test_set", "data.test_dir")]
)
@pytest.mark.parametrize("case", ["fifo_only", "empty_files_only"])
def test_a_class_with_no_usable_file_is_a_data_error(tree, split, key, case):
    folder = tree / split / "vstripes"
    shutil.rmtree(folder)
    if case == "fifo_only":
        write_hostile_entry("fifo", folder)
    else:
        folder.mkdir()
        for i in range(50):
            (folder / f"empty_{i:02d}.jpg").write_bytes(b"")
    with pytest.raises(DataError) as info:
        within(30, discover, data_config(tree), 1)
    assert str(info.value).startswith(f"{key}: class folder {folder} has no ")
    assert ("a FIFO" if case == "fifo_only" else "all empty or unreadable") in str(info.value)


def _drop_file_access_override():
    """In a child of root: drop CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from the bounding set,
    so after exec file modes apply to root too (root's own files stay readable by their owner
    bits, the 0o000 ones do not)."""
    import ctypes

    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    for capability in (1, 2):
        if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def run_denied(command: list[str], timeout=60):
    """`command` in a child that file permissions bind, even when the tests run as root."""
    preexec = _drop_file_access_override if os.geteuid() == 0 else None
    try:
        return subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, preexec_fn=preexec
        )
    except subprocess.TimeoutExpired:
        raise  # a hang is what these tests look for: never a skip
    except subprocess.SubprocessError as exc:
        pytest.skip(f"cannot run a child bound by file permissions as root ({exc})")


@pytest.fixture
def locked_paths():
    """Paths a test sets to mode 0; given back their permissions so tmp_path can be removed."""
    paths = []
    yield paths
    for path in paths:
        path.chmod(0o755)


def test_permission_denied_folder_is_reported_not_skipped_silently(tree, locked_paths):
    hidden = tree / "training_set" / "vstripes" / "private"
    hidden.mkdir()
    shutil.copy(next((tree / "training_set" / "vstripes").glob("*.png")), hidden)
    hidden.chmod(0)
    locked_paths.append(hidden)
    script = textwrap.dedent(f"""
        from types import SimpleNamespace
        from cnnclf.data.layout import discover
        d = discover(SimpleNamespace(train_dir={str(tree / "training_set")!r},
                                     test_dir=None, validation_split=0.25), 1)
        print(d.skipped[{str(hidden)!r}])
    """)
    done = run_denied([sys.executable, "-c", script])
    assert done.returncode == 0, done.stderr
    assert "permission denied" in done.stdout


def test_check_data_reports_unreadable_files_and_fails_a_class_of_them(tree, locked_paths):
    locked = sorted((tree / "training_set" / "hstripes").iterdir())[0]
    locked_paths += [locked, *(tree / "training_set" / "vstripes").iterdir()]
    for path in locked_paths:
        path.chmod(0)
    result = run_denied(
        [sys.executable, "-m", "cnnclf.cli", "check-data", "--format", "json", str(tree)]
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    report = json.loads(result.stdout)
    problem = next(p for p in report["problems"] if p["path"] == str(locked))
    assert problem["kind"] == "unreadable" and "permission denied" in problem["detail"]
    assert any("vstripes has no readable image" in f for f in report["fatal"])
    assert not any("hstripes" in f for f in report["fatal"])


# ------------------------------------------------------------------------------------------
# 4. check-data neither crashes nor passes what stops training.


@pytest.mark.parametrize(
    "case, kind", [("dangling_link", "not_listed"), ("loop_link", "link_loop")]
)
def test_check_data_reports_links_without_crashing(tree, case, kind):
    path = write_hostile_entry(case, tree / "training_set" / "vstripes")
    result = within(60, run_cli, "check-data", "--format", "json", tree)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["splits"]["training_set"] == {"hstripes": 6, "vstripes": 6}
    assert [p["kind"] for p in report["problems"] if p["path"] == str(path)] == [kind]


def test_check_data_fails_a_class_of_empty_files(tree):
    folder = tree / "training_set" / "vstripes"
    for path in folder.iterdir():
        path.unlink()
    for i in range(1000):
        (folder / f"empty_{i:04d}.png").write_bytes(b"")
    result = within(120, run_cli, "check-data", tree)
    assert result.exit_code == 2
    assert f"fatal: training_set: class folder {folder} has no readable image" in result.stdout


def test_check_data_fails_one_file_under_two_classes(tree):
    (tree / "training_set" / "vstripes" / "alias").symlink_to("../hstripes")
    result = run_cli("check-data", "--format", "json", tree)
    assert result.exit_code == 2
    fatal = json.loads(result.stdout)["fatal"]
    assert len(fatal) == 1  # one line for the linked folder, not one per file
    assert "same file, under classes vstripes and hstripes" in fatal[0]
    assert fatal[0].endswith("; 5 more file(s) like it")


# ------------------------------------------------------------------------------------------
# 5. Split folders are not classes (issue 15).


def _pets(root: Path, splits=("train", "val")) -> Path:
    made = make_tree(root / "tmp", n_train=4, n_test=2)
    for split, source in zip(splits, ("training_set", "test_set")):
        shutil.move(made / source, root / "pets" / split)
    shutil.rmtree(root / "tmp")
    return root / "pets"


def test_check_data_checks_train_and_val_as_splits(tmp_path):
    pets = _pets(tmp_path)
    result = run_cli("check-data", "--format", "json", pets)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["splits"] == {
        "train": {"hstripes": 4, "vstripes": 4},
        "val": {"hstripes": 2, "vstripes": 2},
    }


def test_a_folder_of_splits_given_as_train_dir_is_refused(tmp_path):
    pets = _pets(tmp_path)
    expected = (
        f"data.train_dir: {pets} looks like a folder of splits (train/, val/), not of "
        f"classes: set data.train_dir: {pets / 'train'} and data.test_dir: "
        f"{pets / 'val'}"
    )
    config = SimpleNamespace(train_dir=str(pets), test_dir=None, validation_split=0.2)
    with pytest.raises(DataError) as info:
        discover(config, 1)
    assert str(info.value) == expected
    config_file = write_config(tmp_path / "c.yaml", pets)
    text = config_file.read_text().replace(str(pets / "training_set"), str(pets))
    config_file.write_text(text.replace(str(pets / "test_set"), str(pets / "val")))
    result = run_cli("check-data", "--config", config_file)
    assert result.exit_code == 2 and "looks like a folder of splits (train/, val/)" in result.stdout


def test_unnamed_splits_with_the_same_classes_are_refused_too(tmp_path):
    pets = _pets(tmp_path, splits=("fold_a", "fold_b"))
    with pytest.raises(DataError, match="looks like a folder of splits"):
        discover(SimpleNamespace(train_dir=str(pets), test_dir=None, validation_split=0.2), 1)


def test_one_shared_sub_folder_per_class_is_still_a_class_layout(tmp_path):
    # cat/images/*.jpg, dog/images/*.jpg: a common download layout, not splits.
    tree = make_tree(tmp_path / "data", n_train=4, with_test=False)
    for cls in ("hstripes", "vstripes"):
        folder = tree / "training_set" / cls
        (folder / "images").mkdir()
        for path in list(folder.iterdir()):
            if path.is_file():
                path.rename(folder / "images" / path.name)
    dataset = discover(data_config(tree, test_dir=False), 1)
    assert len(dataset.train) + len(dataset.validation) == 8


# ------------------------------------------------------------------------------------------
# 6. Repeated problems are grouped in the table, listed in full in JSON.


def test_repeated_problems_are_grouped_in_the_table(tree):
    result = run_cli("check-data", "--image-size", "64", "64", tree)
    lines = result.stdout.splitlines()
    too_small = [line for line in lines if line.lstrip().startswith("warning too_small")]
    assert len(too_small) == 1 and "too_small       18 files: " in too_small[0]
    start = lines.index(too_small[0])
    assert sum(1 for line in lines[start + 1 : start + 4] if str(tree) in line) == 3
    assert "... and 15 more" in lines[start + 4]
    report = json.loads(
        run_cli("check-data", "--format", "json", "--image-size", "64", "64", tree).stdout
    )
    assert sum(p["kind"] == "too_small" for p in report["problems"]) == 18
