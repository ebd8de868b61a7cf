"""Tampered bundles and exports: every damaged sidecar or model file is refused in one line.

Each case copies a trained fixture bundle, damages one thing, and runs `cnnclf predict` on it.
The contract: exit code 1, exactly one `error:` line on stderr that names the --model path and
the file at fault, no traceback, and nothing predicted.
"""

import json
import shutil
import sys

import pytest
from helpers import read_json, run_cli
from hostile_bundles import declare_member_size

# Every test here trains a model or uses a trained bundle.
pytestmark = pytest.mark.slow

BINARY = "binary_bundle"
MULTI = "multi_bundle"
CI, PP, BJ, MK = "class_indices.json", "preprocessing.json", "bundle.json", "model.keras"


def edit_json(name, change):
    """A tamper step: load `name`, let `change` edit (or replace) it, write it back."""

    def tamper(bundle):
        data = read_json(bundle / name)
        result = change(data)
        (bundle / name).write_text(json.dumps(data if result is None else result))

    return tamper


def write_text(name, text):
    def tamper(bundle):
        (bundle / name).write_text(text)

    return tamper


def set_key(name, key, value):
    return edit_json(name, lambda data: data.__setitem__(key, value))


def both(*tampers):
    def tamper(bundle):
        for step in tampers:
            step(bundle)

    return tamper


def older(tamper):
    """`tamper` on a bundle as written before bundle.json recorded `params` and `sha256`: the
    checks behind the digest (the model against its sidecars) still stand for those."""

    def drop(data):
        data.pop("params")
        data.pop("sha256")

    return both(tamper, edit_json(BJ, drop))


def declare_size(member, size):
    """model.keras's `member` declares `size` bytes in the zip's directory (nothing inflated)."""
    return lambda bundle: declare_member_size(bundle / MK, member, size)


def huge_sparse(name, size):
    def tamper(bundle):
        with open(bundle / name, "r+b") as f:
            f.truncate(size)  # sparse: the test writes nothing like `size` bytes

    return tamper


SWAP = {"hstripes": 1, "vstripes": 0}


def truncate_model(bundle):
    data = (bundle / MK).read_bytes()
    (bundle / MK).write_bytes(data[: len(data) // 2])


def zip_of_text(bundle):
    import zipfile

    with zipfile.ZipFile(bundle / MK, "w") as archive:
        archive.writestr("notes.txt", "not a model")


def lambda_model(bundle):
    """A model.keras with a Python lambda in it: only loadable with safe_mode=False."""
    import keras

    model = keras.Sequential(
        [
            keras.Input((16, 16, 3)),
            keras.layers.Lambda(lambda x: x * 1.0),
            keras.layers.Flatten(),
            keras.layers.Dense(1, "sigmoid"),
        ]
    )
    (bundle / MK).unlink()
    model.save(bundle / MK)


CASES = [
    # class_indices.json
    ("one_class_name", BINARY, edit_json(CI, lambda d: {"hstripes": 0}), CI, "exactly 2"),
    ("three_names_on_binary", BINARY, set_key(CI, "checker", 2), CI, "exactly 2"),
    ("repeated_index", BINARY, set_key(CI, "vstripes", 0), CI, "0..N-1"),
    ("index_gap", BINARY, set_key(CI, "vstripes", 2), CI, "0..N-1"),
    ("string_index", BINARY, set_key(CI, "vstripes", "1"), CI, "must be an integer"),
    (
        "boolean_index",
        BINARY,
        edit_json(CI, lambda d: {"a": False, "b": True}),
        CI,
        "must be an integer",
    ),
    ("names_as_a_list", BINARY, edit_json(CI, lambda d: sorted(d)), CI, "got a list"),
    ("empty_name", BINARY, edit_json(CI, lambda d: {"": 0, "vstripes": 1}), CI, "non-empty"),
    ("repeated_name", BINARY, write_text(CI, '{"a": 0, "b": 1, "a": 1}'), CI, "more than once"),
    ("class_indices_not_json", BINARY, write_text(CI, "hstripes 0\n"), CI, "not valid JSON"),
    (
        "two_names_on_three_outputs",
        MULTI,
        older(
            both(edit_json(CI, lambda d: {"a": 0, "b": 1}), set_key(BJ, "class_names", ["a", "b"]))
        ),
        CI,
        "3 output",
    ),
    (
        "names_differ_from_training",
        MULTI,
        edit_json(CI, lambda d: {"a": 0, "b": 1, "c": 2}),
        BJ,
        "differ",
    ),
    # preprocessing.json
    ("threshold_above_1", BINARY, set_key(PP, "threshold", 2.0), PP, "threshold"),
    ("threshold_zero", BINARY, set_key(PP, "threshold", 0), PP, "threshold"),
    ("threshold_string", BINARY, set_key(PP, "threshold", "high"), PP, "threshold"),
    ("threshold_on_categorical", MULTI, set_key(PP, "threshold", 0.5), PP, "must be null"),
    ("image_size_60000", BINARY, set_key(PP, "image_size", [60000, 60000]), PP, "8 to 8192"),
    ("image_size_one_number", BINARY, set_key(PP, "image_size", [16]), PP, "image_size"),
    ("image_size_string", BINARY, set_key(PP, "image_size", "16x16"), PP, "image_size"),
    ("image_size_float", BINARY, set_key(PP, "image_size", [16.5, 16]), PP, "image_size"),
    (
        "image_size_not_the_models",
        BINARY,
        older(set_key(PP, "image_size", [32, 32])),
        PP,
        "takes (16, 16, 3)",
    ),
    (
        "grayscale_on_rgb_model",
        BINARY,
        older(set_key(PP, "color_mode", "grayscale")),
        PP,
        "takes (16, 16, 3)",
    ),
    ("color_mode_cmyk", BINARY, set_key(PP, "color_mode", "cmyk"), PP, "color_mode"),
    ("interpolation_bogus", BINARY, set_key(PP, "interpolation", "bogus"), PP, "interpolation"),
    ("rescale_zero", BINARY, set_key(PP, "rescale", 0), PP, "rescale"),
    ("rescale_string", BINARY, set_key(PP, "rescale", "1/255"), PP, "rescale"),
    (
        "rescale_nan",
        BINARY,
        write_text(
            PP,
            '{"image_size": [16, 16], "color_mode": "rgb", '
            '"interpolation": "bilinear", "rescale": NaN, '
            '"class_mode": "binary", "threshold": 0.5}',
        ),
        PP,
        "rescale",
    ),
    (
        "rescale_not_in_model",
        BINARY,
        set_key(PP, "rescale_in_model", False),
        PP,
        "rescale_in_model",
    ),
    ("class_mode_sparse", BINARY, set_key(PP, "class_mode", "sparse"), PP, "class_mode"),
    (
        "categorical_on_sigmoid_model",
        BINARY,
        older(both(set_key(PP, "class_mode", "categorical"), set_key(PP, "threshold", None))),
        PP,
        "one output unit per class",
    ),
    ("binary_on_softmax_model", MULTI, set_key(PP, "class_mode", "binary"), CI, "exactly 2"),
    (
        "color_mode_missing",
        BINARY,
        edit_json(PP, lambda d: d.pop("color_mode") and None),
        PP,
        "color_mode: missing",
    ),
    ("preprocessing_a_list", BINARY, edit_json(PP, lambda d: []), PP, "got a list"),
    # bundle.json
    ("format_2", BINARY, set_key(BJ, "format", 2), BJ, "format"),
    ("manifest_a_list", BINARY, edit_json(BJ, lambda d: [d]), BJ, "got a list"),
    ("manifest_not_json", BINARY, write_text(BJ, '{"format": 1,'), BJ, "not valid JSON"),
    ("manifest_threshold_string", BINARY, set_key(BJ, "threshold", "high"), BJ, "threshold"),
    (
        "class_names_disagree",
        BINARY,
        set_key(BJ, "class_names", ["vstripes", "hstripes"]),
        BJ,
        "differ",
    ),
    # a swap of two classes, or any edit of what decides a label, is refused
    (
        "swap_with_class_names_deleted",
        BINARY,
        both(edit_json(CI, lambda d: SWAP), edit_json(BJ, lambda d: d.pop("class_names") and d)),
        BJ,
        "class_names: missing",
    ),
    (
        "consistent_swap",
        BINARY,
        both(edit_json(CI, lambda d: SWAP), set_key(BJ, "class_names", ["vstripes", "hstripes"])),
        CI,
        "sha256 differs from the one bundle.json recorded",
    ),
    ("threshold_edited", BINARY, set_key(PP, "threshold", 0.01), PP, "not the file written"),
    # sidecars too large or too deep to parse
    ("class_indices_300_mb", BINARY, huge_sparse(CI, 300_000_000), CI, "larger than 4 MB"),
    ("class_indices_deep", BINARY, write_text(CI, "[" * 100_000), CI, "nested too deeply"),
    ("manifest_deep", BINARY, write_text(BJ, '{"a": ' * 100_000), BJ, "nested too deeply"),
    # model.keras
    (
        "config_declares_1_5_gb",
        BINARY,
        declare_size("config.json", 1_500_000_000),
        MK,
        "config.json inflates to 1.5 GB, more than the 16 MB",
    ),
    (
        "weights_beyond_the_parameter_count",
        BINARY,
        declare_size("model.weights.h5", 100_000_000),
        MK,
        "parameters (bundle.json's params) needs",
    ),
    (
        "weights_bomb_in_an_older_bundle",
        BINARY,
        older(declare_size("model.weights.h5", 3_000_000_000)),
        MK,
        "decompression bomb",
    ),
    ("model_truncated", BINARY, truncate_model, MK, "damaged"),
    ("model_is_text", BINARY, write_text(MK, "not a model"), MK, "damaged"),
    ("model_empty", BINARY, write_text(MK, ""), MK, "damaged"),
    ("model_zip_of_something_else", BINARY, zip_of_text, MK, "no config.json"),
    ("model_needs_unsafe_mode", BINARY, lambda_model, MK, "safe mode"),
]


def assert_refused(result, model, file, phrase):
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: --model {model}: "), lines[0]
    assert file in lines[0] and phrase in lines[0], lines[0]
    assert result.stdout == ""


@pytest.mark.parametrize(
    "name, bundle_name, tamper, file, phrase", CASES, ids=[c[0] for c in CASES]
)
def test_tampered_bundle_is_refused_in_one_line(
    request, tmp_path, name, bundle_name, tamper, file, phrase
):
    bundle = tmp_path / "bundle"
    shutil.copytree(request.getfixturevalue(bundle_name), bundle)
    tamper(bundle)
    image = tmp_path / "image.png"
    from helpers import pattern_image

    pattern_image("hstripes", 20, 20, seed=1).save(image)
    assert_refused(run_cli("predict", "--model", bundle, image), bundle, file, phrase)


def test_an_untouched_copy_still_predicts(tmp_path, binary_bundle):
    """The control: copying alone does not trip any check."""
    from helpers import pattern_image

    bundle = tmp_path / "bundle"
    shutil.copytree(binary_bundle, bundle)
    pattern_image("hstripes", 20, 20, seed=1).save(tmp_path / "image.png")
    assert run_cli("predict", "--model", bundle, tmp_path / "image.png").exit_code == 0


def test_an_older_bundle_without_params_or_digests_still_predicts(tmp_path, binary_bundle):
    from helpers import pattern_image

    bundle = tmp_path / "bundle"
    shutil.copytree(binary_bundle, bundle)
    older(lambda b: None)(bundle)
    pattern_image("hstripes", 20, 20, seed=1).save(tmp_path / "image.png")
    result = run_cli("predict", "--model", bundle, tmp_path / "image.png")
    assert result.exit_code == 0, result.output


def test_bundle_json_records_the_parameter_count_and_the_digests(binary_bundle):
    import hashlib

    manifest = read_json(binary_bundle / BJ)
    from cnnclf.bundle import load_bundle

    assert manifest["params"] == load_bundle(binary_bundle).model.count_params()
    assert manifest["sha256"] == {
        name: hashlib.sha256((binary_bundle / name).read_bytes()).hexdigest() for name in (CI, PP)
    }


@pytest.fixture(scope="module")
def exports(tmp_path_factory, binary_bundle):
    """A float ONNX and a float TFLite export of the binary fixture bundle."""
    folder = tmp_path_factory.mktemp("exports")
    for fmt in ("onnx", "tflite"):
        result = run_cli(
            "export", "--model", binary_bundle, "--format", fmt, "--out", folder / f"model.{fmt}"
        )
        assert result.exit_code == 0, result.output
    return folder


def edit_export_json(change):
    def tamper(model):
        sidecar = model.with_name(model.name + ".cnnclf.json")
        data = read_json(sidecar)
        change(data)
        sidecar.write_text(json.dumps(data))

    return tamper


def truncate(model):
    data = model.read_bytes()
    model.write_bytes(data[: len(data) // 3])


EXPORT_CASES = [
    (
        "three_names",
        "onnx",
        edit_export_json(lambda d: d["class_indices"].update(checker=2)),
        ".cnnclf.json: class_indices: a binary model needs exactly 2",
    ),
    (
        "threshold_2",
        "onnx",
        edit_export_json(lambda d: d["preprocessing"].update(threshold=2)),
        ".cnnclf.json: preprocessing: threshold:",
    ),
    (
        "image_size_not_the_models",
        "onnx",
        edit_export_json(lambda d: d["preprocessing"].update(image_size=[32, 32])),
        ".cnnclf.json: preprocessing: image_size [32, 32]",
    ),
    (
        "interpolation_bogus",
        "tflite",
        edit_export_json(lambda d: d["preprocessing"].update(interpolation="bogus")),
        ".cnnclf.json: preprocessing: interpolation:",
    ),
    (
        "format_of_another_file",
        "onnx",
        edit_export_json(lambda d: d.update(format="tflite")),
        ".cnnclf.json: format: must be 'onnx'",
    ),
    (
        "preprocessing_missing",
        "tflite",
        edit_export_json(lambda d: d.pop("preprocessing")),
        ".cnnclf.json: preprocessing: missing",
    ),
    (
        "sidecar_not_json",
        "onnx",
        lambda m: m.with_name(m.name + ".cnnclf.json").write_text("{"),
        ".cnnclf.json: not valid",
    ),
    (
        "labels_reordered",
        "onnx",
        lambda m: m.with_name(m.name + ".labels.txt").write_text("vstripes\nhstripes\n"),
        ".labels.txt: does not list the classes",
    ),
    ("onnx_truncated", "onnx", truncate, "model.onnx: damaged or not an ONNX model"),
    ("tflite_truncated", "tflite", truncate, "model.tflite: damaged or not a TFLite model"),
]


@pytest.mark.parametrize(
    "name, fmt, tamper, message", EXPORT_CASES, ids=[c[0] for c in EXPORT_CASES]
)
def test_tampered_export_is_refused_in_one_line(tmp_path, exports, name, fmt, tamper, message):
    from helpers import pattern_image

    for path in exports.glob(f"model.{fmt}*"):
        shutil.copy(path, tmp_path / path.name)
    model = tmp_path / f"model.{fmt}"
    tamper(model)
    pattern_image("hstripes", 20, 20, seed=1).save(tmp_path / "image.png")
    result = run_cli("predict", "--model", model, tmp_path / "image.png")
    assert_refused(result, model, f"model.{fmt}", message)


def test_truncated_tflite_on_tensorflows_interpreter_is_refused_not_a_crash(
    monkeypatch, tmp_path, exports
):
    """Without LiteRT, tf.lite.Interpreter runs .tflite files; it crashed the process (SIGSEGV
    or SIGBUS) on a truncated one instead of raising."""
    from helpers import pattern_image

    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    for path in exports.glob("model.tflite*"):
        shutil.copy(path, tmp_path / path.name)
    model = tmp_path / "model.tflite"
    truncate(model)
    pattern_image("hstripes", 20, 20, seed=1).save(tmp_path / "image.png")
    result = run_cli("predict", "--model", model, tmp_path / "image.png")
    assert_refused(result, model, "model.tflite", "damaged or not a TFLite model")
