"""cnnclf summary: the Keras table, parameter counts, per-block geometry and a bundle's metrics."""

import json
import sys

import pytest
from helpers import read_json, run_cli, run_process, write_config

from cnnclf.bundle import load_bundle
from cnnclf.inference.summary import conv_block_geometry

TWO_BLOCKS = [
    {"filters": 4, "kernel_size": 3, "pool_size": 2},
    {"filters": 8, "kernel_size": 3, "pool_size": 2},
]


def test_geometry_of_two_valid_blocks_by_hand():
    # 16 px input, two 3x3 valid convolutions, each followed by a 2x2 pooling:
    #   conv1: 16 - 3 + 1 = 14 px, rf 1 + (3-1)*1 = 3;   pool1: 14 // 2 = 7, rf 3 + (2-1)*1 = 4,
    #          jump 1*2 = 2
    #   conv2:  7 - 3 + 1 = 5 px,  rf 4 + (3-1)*2 = 8;   pool2:  5 // 2 = 2, rf 8 + (2-1)*2 = 10,
    #          jump 2*2 = 4
    blocks = conv_block_geometry([16, 16], TWO_BLOCKS, "valid")
    assert [
        (b["conv_output"], b["conv_receptive_field"], b["output"], b["receptive_field"], b["jump"])
        for b in blocks
    ] == [([14, 14], 3, [7, 7], 4, 2), ([5, 5], 8, [2, 2], 10, 4)]


def test_same_padding_changes_sizes_not_the_receptive_field():
    # same: 16 -> conv 16 -> pool 8 -> conv 8 -> pool 4 (a 20 x 12 input: 20,10,10,5 and 12,6,6,3)
    blocks = conv_block_geometry([20, 12], TWO_BLOCKS, "same")
    assert [b["output"] for b in blocks] == [[10, 6], [5, 3]]
    assert [b["receptive_field"] for b in blocks] == [4, 10]


@pytest.mark.slow
def test_summary_of_a_bundle(binary_bundle):
    result = run_cli("summary", "--model", binary_bundle, "--format", "json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    model = load_bundle(binary_bundle).model
    assert summary["total_params"] == model.count_params()
    assert summary["trainable_params"] == model.count_params()  # no BatchNormalization
    assert summary["non_trainable_params"] == 0
    assert [layer["name"] for layer in summary["layers"]] == [layer.name for layer in model.layers]
    assert summary["input_size"] == [16, 16, 3]
    assert summary["class_names"] == ["hstripes", "vstripes"] and not summary["classes_assumed"]
    # The tiny config's one block: 16 -> conv 14 (rf 3) -> pool 7 (rf 4), as Keras built it.
    assert summary["blocks"] == [
        {
            "block": 1,
            "filters": 4,
            "kernel_size": 3,
            "pool_size": 2,
            "conv_output": [14, 14],
            "conv_receptive_field": 3,
            "output": [7, 7],
            "receptive_field": 4,
            "jump": 2,
        }
    ]
    assert tuple(model.get_layer("pool1").output.shape[1:3]) == (7, 7)
    manifest = read_json(binary_bundle / "bundle.json")
    assert summary["metrics"]["final_metrics"] == manifest["final_metrics"]
    assert summary["metrics"]["train_images"] == {"hstripes": 12, "vstripes": 12}
    assert summary["metrics"]["validation_images"] == {"hstripes": 4, "vstripes": 4}

    table = run_cli("summary", "--model", binary_bundle)
    assert table.exit_code == 0, table.output
    assert "Param #" in table.stdout and "conv1 (Conv2D)" in table.stdout
    assert f"parameters: {model.count_params():,} total" in table.stdout
    assert "training images: 24 (12 hstripes, 12 vstripes)" in table.stdout
    assert "validation images: 8 from test_dir" in table.stdout


@pytest.mark.slow
def test_summary_of_a_config(tmp_path, binary_tree):
    config = write_config(tmp_path / "c.yaml", binary_tree)
    result = run_cli(
        "summary",
        "--config",
        config,
        "--set",
        f"model.conv_blocks={TWO_BLOCKS}",
        "--format",
        "json",
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    # By hand, 3 input channels, 2 classes (1 sigmoid unit):
    #   conv1 3*3*3*4 + 4 = 112, conv2 3*3*4*8 + 8 = 296, flatten 2*2*8 = 32 values,
    #   dense1 32*8 + 8 = 264, output 8*1 + 1 = 9; total 681.
    assert summary["total_params"] == 681 == summary["trainable_params"]
    assert summary["classes"] == 2 and summary["classes_assumed"] and summary["path"] is None
    assert "(N - 1) x 9 more parameters" in summary["note"]
    assert [b["receptive_field"] for b in summary["blocks"]] == [4, 10]
    assert summary["metrics"] is None

    table = run_cli("summary", "--config", config)
    assert table.exit_code == 0, table.output
    assert "classes: 2 (assumed)" in table.stdout


@pytest.mark.slow
def test_batch_norm_weights_count_as_non_trainable(tmp_path, binary_tree):
    config = write_config(tmp_path / "c.yaml", binary_tree)
    result = run_cli(
        "summary", "--config", config, "--set", "model.batch_norm=true", "--format", "json"
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    # bn1 over 4 filters: gamma and beta train, moving mean and variance do not (2 * 4).
    assert summary["non_trainable_params"] == 8
    assert summary["trainable_params"] + 8 == summary["total_params"]


def test_usage_errors_are_one_line_without_tensorflow(tmp_path, binary_tree):
    config = write_config(tmp_path / "c.yaml", binary_tree)
    code = (
        "import sys\nfrom cnnclf.cli import main\n"
        "try:\n    main()\nexcept SystemExit as exc:\n    c = exc.code\n"
        "sys.stderr.write('tensorflow imported: %s\\n' % ('tensorflow' in sys.modules))\n"
        "sys.exit(c)\n"
    )
    for args, message in [
        ([], "error: summary: give exactly one of --model BUNDLE or --config FILE"),
        (
            ["--model", tmp_path, "--config", config],
            "error: summary: give exactly one of --model BUNDLE or --config FILE",
        ),
        (
            ["--model", tmp_path, "--set", "train.epochs=2"],
            "error: summary: --set needs --config (a bundle's config is fixed)",
        ),
    ]:
        done = run_process(
            [sys.executable, "-c", code, "summary", *map(str, args)],
            "cnnclf summary",
        )
        assert done.returncode == 2
        assert done.stderr.splitlines() == [message, "tensorflow imported: False"]


def test_a_folder_that_is_not_a_bundle_exits_1(tmp_path):
    (tmp_path / "model.keras").write_bytes(b"not a zip")
    result = run_cli("summary", "--model", tmp_path)
    assert result.exit_code == 1
    assert result.stderr.strip().startswith(f"error: --model {tmp_path}: not a complete")
    assert len(result.stderr.strip().splitlines()) == 1
