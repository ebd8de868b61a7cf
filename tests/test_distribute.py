"""tf.distribute on CPU: strategy and precision choice, mirrored, multi-worker, a dying worker."""

import json
import os
import sys
from pathlib import Path

import pytest
from helpers import (
    WAIT_S,
    communicate,
    read_json,
    run_cli,
    run_process,
    start_workers,
    wait_for,
    write_config,
)

from cnnclf.errors import ConfigError
from cnnclf.training.distribute import Placement, plan_jit_compile, plan_precision, plan_strategy

TF_CONFIG_2 = json.dumps(
    {"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 0}}
)


@pytest.mark.parametrize(
    "setting, gpus, expected",
    [
        ("auto", [], "default"),
        ("auto", ["GPU:0"], "one_device"),  # so batches are prefetched onto the GPU
        ("one_device", [], "one_device"),
        ("auto", ["GPU:0", "GPU:1"], "mirrored"),
        ("none", ["GPU:0", "GPU:1"], "default"),
        ("mirrored", [], "mirrored"),
    ],
)
def test_strategy_choice_from_visible_devices(setting, gpus, expected):
    assert plan_strategy(setting, gpus) == expected


def test_multi_worker_needs_a_valid_tf_config():
    assert plan_strategy("multi_worker", [], TF_CONFIG_2) == "multi_worker"
    with pytest.raises(ConfigError, match="needs the cluster in the TF_CONFIG"):
        plan_strategy("multi_worker", [], None)
    with pytest.raises(ConfigError, match="TF_CONFIG: must be JSON"):
        plan_strategy("multi_worker", [], '{"cluster": {}}')


@pytest.mark.parametrize(
    "setting, gpus, expected",
    [
        ("auto", [], "float32"),
        # Ampere and Hopper: bfloat16 tensor cores, float32's range, no loss scaling.
        (
            "auto",
            [{"compute_capability": (8, 0)}, {"compute_capability": (9, 0)}],
            "mixed_bfloat16",
        ),
        ("auto", [{"compute_capability": (8, 6)}], "mixed_bfloat16"),
        # Volta/Turing (no bfloat16 tensor cores), alone or beside an Ampere: float16.
        ("auto", [{"compute_capability": (7, 0)}], "mixed_float16"),
        ("auto", [{"compute_capability": (7, 5)}, {"compute_capability": (8, 0)}], "mixed_float16"),
        ("auto", [{"compute_capability": (6, 1)}], "float32"),  # no tensor cores
        ("auto", [{"compute_capability": (6, 1)}, {"compute_capability": (9, 0)}], "float32"),
        ("auto", [{"compute_capability": None}], "float32"),  # unknown: the safe choice
        ("float16", [], "mixed_float16"),
        ("bfloat16", [], "mixed_bfloat16"),
        ("none", [{"compute_capability": (9, 0)}], "float32"),
    ],
)
def test_precision_choice(setting, gpus, expected):
    assert plan_precision(setting, gpus) == expected


CPU = ["/device:CPU:0"]
TWO_CPUS = ["/device:CPU:0", "/device:CPU:1"]
WORKERS = ["/job:worker/replica:0/task:0/device:CPU:0", "/job:worker/replica:0/task:1/device:CPU:0"]
GPU = ["/physical_device:GPU:0 (NVIDIA H100 80GB HBM3)"]
TWO_GPUS = GPU + ["/physical_device:GPU:1 (NVIDIA H100 80GB HBM3)"]
GPU_WORKERS = [
    "/job:worker/replica:0/task:0/device:GPU:0",
    "/job:worker/replica:0/task:1/device:GPU:0",
]


@pytest.mark.parametrize(
    "setting, devices, expected",
    [
        ("auto", CPU, False),  # XLA on CPU: seconds of compiling, no faster steps
        ("auto", TWO_CPUS, False),  # mirrored on logical CPUs
        ("auto", WORKERS, False),  # multi_worker on CPUs
        ("auto", GPU, True),
        ("auto", TWO_GPUS, True),  # mirrored: each replica's forward and backward
        ("auto", GPU_WORKERS, True),  # multi_worker on GPUs
        ("auto", ["/device:TPU:0"], True),
        (True, CPU, True),
        (True, TWO_GPUS, True),
        (False, GPU, False),
        (False, CPU, False),
    ],
)
def test_jit_compile_choice(setting, devices, expected):
    assert plan_jit_compile(setting, devices) is expected


def test_jit_compile_auto_is_off_with_determinism():
    assert plan_jit_compile("auto", GPU, deterministic=True) is False
    assert plan_jit_compile(False, GPU, deterministic=True) is False


def test_placement_line_says_whether_xla_runs():
    line = Placement(GPU, "default", 1, "mixed_bfloat16", jit_compile=True).describe()
    assert line == (
        "devices: /physical_device:GPU:0 (NVIDIA H100 80GB HBM3); strategy: default; "
        "replicas: 1; precision: mixed_bfloat16; jit_compile: true"
    )


@pytest.mark.slow
def test_the_replica_wrapper_trains_the_same_weights_in_the_same_order():
    # A checkpoint written with train.jit_compile under mirrored must fit the model without
    # the wrapper (and the other way round); the bundle saves the inner model.
    import keras
    import numpy as np

    from cnnclf.training.distribute import compile_replica_forward

    inner = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(2, 3),
            keras.layers.BatchNormalization(),
            keras.layers.Flatten(),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    model = compile_replica_forward(inner)
    model.compile(optimizer="adam", loss="binary_crossentropy", jit_compile=False)
    assert [w.path for w in model.weights] == [w.path for w in inner.weights]
    assert model.count_params() == inner.count_params()
    x = np.random.default_rng(0).random((4, 8, 8, 1)).astype("float32")
    np.testing.assert_allclose(model.predict_on_batch(x), inner.predict_on_batch(x), rtol=1e-5)
    model.fit(x, np.ones((4, 1)), epochs=1, verbose=0)
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), inner.get_weights()))


@pytest.mark.slow
def test_only_float16_gets_loss_scaling():
    import keras

    from cnnclf.config import load_config
    from cnnclf.model.build import make_optimizer

    config = load_config(None)
    assert isinstance(make_optimizer(config, "mixed_float16"), keras.optimizers.LossScaleOptimizer)
    for precision in ("mixed_bfloat16", "float32"):
        assert not isinstance(
            make_optimizer(config, precision), keras.optimizers.LossScaleOptimizer
        )


def cli(*args, env=None, **kwargs):
    return run_process(
        [sys.executable, "-m", "cnnclf.cli", *map(str, args)],
        f"cnnclf {args[0]}",
        env={**os.environ, **(env or {})},
        **kwargs,
    )


def predictions(bundle: Path, folder: Path) -> list[dict]:
    result = run_cli("predict", "--model", bundle, "--format", "json", folder)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.mark.slow
def test_mirrored_on_two_logical_cpus_matches_a_single_device(tmp_path, binary_tree):
    # Trained long enough to learn the separable fixture: one epoch leaves every probability
    # near 0.5, where the last-digit differences of a distributed run could flip a label.
    config = write_config(
        tmp_path / "c.yaml", binary_tree, train={"epochs": 10, "seed": 7, "learning_rate": 0.01}
    )
    mirrored = cli(
        "train",
        "--config",
        config,
        "--out",
        tmp_path / "mirrored",
        "--set",
        "train.distribute=mirrored",
        env={"CNNCLF_LOGICAL_CPUS": "2"},
    )
    assert mirrored.returncode == 0, mirrored.stderr
    first = mirrored.stderr.splitlines()[0]
    assert first.startswith(
        "devices: /device:CPU:0, /device:CPU:1; strategy: mirrored; replicas: 2; precision: float32"
    )
    single = run_cli("train", "--config", config, "--out", tmp_path / "single")
    assert single.exit_code == 0, single.output
    assert read_json(tmp_path / "mirrored" / "bundle.json")["placement"]["replicas"] == 2
    a = predictions(tmp_path / "mirrored", binary_tree / "test_set")
    b = predictions(tmp_path / "single", binary_tree / "test_set")
    assert [r["label"] for r in a] == [r["label"] for r in b]
    assert [r["label"] for r in a] == [Path(r["path"]).parent.name for r in a]


@pytest.mark.slow
def test_jit_compile_under_mirrored_on_two_logical_cpus(tmp_path, binary_tree):
    # Keras' own jit_compile=True fails here (one XLA cluster for both replicas' steps);
    # cnnclf compiles each replica's forward and backward pass instead.
    config = write_config(tmp_path / "c.yaml", binary_tree, train={"epochs": 2, "seed": 7})
    done = cli(
        "train",
        "--config",
        config,
        "--out",
        tmp_path / "b",
        "--set",
        "train.distribute=mirrored",
        "--set",
        "train.jit_compile=true",
        "--set",
        "augment.where=step",
        env={"CNNCLF_LOGICAL_CPUS": "2"},
    )
    assert done.returncode == 0, done.stderr
    assert "replicas: 2; precision: float32; jit_compile: true" in done.stderr
    placement = read_json(tmp_path / "b" / "bundle.json")["placement"]
    assert placement["strategy"] == "mirrored" and placement["jit_compile"] is True
    assert len(predictions(tmp_path / "b", binary_tree / "test_set")) == 8


@pytest.mark.slow
def test_one_device_trains_as_the_default_strategy_does(tmp_path, binary_tree):
    """What a single GPU gets (auto): the same training as without a strategy, on the CPU
    here, with Keras' whole-step XLA allowed (one device: no cross-replica sum)."""
    histories = {}
    for name, extra in (
        ("default", ["train.distribute=none"]),
        ("one_device", ["train.distribute=one_device"]),
        ("one_device_xla", ["train.distribute=one_device", "train.jit_compile=true"]),
    ):
        deterministic = "false" if name.endswith("xla") else "true"
        config = write_config(
            tmp_path / f"{name}.yaml", binary_tree, train={"epochs": 2, "seed": 7}
        )
        sets = [
            arg
            for key in extra + [f"train.deterministic={deterministic}"]
            for arg in ("--set", key)
        ]
        result = run_cli("train", "--config", config, "--out", tmp_path / name, *sets)
        assert result.exit_code == 0, result.output
        placement = read_json(tmp_path / name / "bundle.json")["placement"]
        assert placement["strategy"] == ("default" if name == "default" else "one_device")
        assert placement["jit_compile"] is name.endswith("xla")
        histories[name] = read_json(tmp_path / name / "history.json")
    # The same model up to float rounding (the strategy sums a batch's loss in another
    # order): validation losses agree to 0.1%, and XLA changes nothing visible either.
    for name in ("one_device", "one_device_xla"):
        assert histories[name]["val_loss"] == pytest.approx(
            histories["default"]["val_loss"], rel=1e-3
        )
        assert histories[name]["loss"] == pytest.approx(histories["default"]["loss"], rel=1e-2)
    assert len(histories["one_device_xla"]["loss"]) == 2


@pytest.mark.slow
def test_multi_worker_trains_and_only_the_chief_writes(tmp_path, binary_tree):
    config = write_config(tmp_path / "c.yaml", binary_tree, train={"epochs": 2, "seed": 3})
    out = tmp_path / "bundle"
    workers = start_workers(config, out)
    errors = [communicate(w, "a multi-worker training run", 2 * WAIT_S)[1] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], errors
    assert "strategy: multi_worker; replicas: 2" in errors[0]
    assert "the chief writes the bundle" in errors[1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle", "c.yaml"]
    manifest = read_json(out / "bundle.json")
    assert manifest["epochs"] == 2 and manifest["placement"]["strategy"] == "multi_worker"
    assert len(predictions(out, binary_tree / "test_set")) == 8


@pytest.mark.slow
def test_multi_worker_with_jit_compile(tmp_path, binary_tree):
    # A step compiled whole fails here (UnimplementedError: the gradient all-reduce cannot
    # live in an XLA cluster); each replica's forward and backward pass can.
    config = write_config(tmp_path / "c.yaml", binary_tree, train={"epochs": 1, "seed": 3})
    out = tmp_path / "bundle"
    workers = start_workers(config, out, "train.jit_compile=true")
    errors = [communicate(w, "a multi-worker training run", 2 * WAIT_S)[1] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], errors
    assert "strategy: multi_worker; replicas: 2; precision: float32; jit_compile: true" in errors[0]
    assert read_json(out / "bundle.json")["placement"]["jit_compile"] is True


@pytest.mark.slow
def test_a_dying_worker_fails_the_others_clearly(tmp_path, binary_tree):
    config = write_config(tmp_path / "c.yaml", binary_tree, train={"epochs": 500, "seed": 3})
    out = tmp_path / "bundle"
    # The collective timeout bounds every collective op, start-up's included: 30 s fired
    # before the first epoch was saved on a loaded machine. This one leaves room for a machine
    # ten times slower. A killed worker's dropped connection fails the chief well before it
    # (the whole test took 26 s here); the timeout is what a worker that hangs would meet.
    timeout = 300
    chief, other = start_workers(config, out, f"train.collective_timeout={timeout}")
    progress = tmp_path / ".bundle.partial" / "progress.json"
    wait_for(
        lambda: progress.exists() or chief.poll() is not None,
        "the first epoch's checkpoint (.bundle.partial/progress.json)",
        timeout=2 * WAIT_S,
    )
    assert progress.exists(), communicate(chief, "the chief")[1]
    other.kill()
    _, stderr = communicate(chief, "the chief to fail once the other worker died", timeout + WAIT_S)
    assert chief.returncode == 1
    assert "error: multi_worker: lost contact with another worker" in stderr
    assert "Traceback" not in stderr
    assert not out.exists() and progress.exists()  # resumable, nothing half-published
    other.communicate()


@pytest.mark.slow
def test_mixed_precision_is_recorded_and_predicts_anywhere(tmp_path, binary_tree):
    config = write_config(tmp_path / "c.yaml", binary_tree)
    result = run_cli(
        "train",
        "--config",
        config,
        "--out",
        tmp_path / "b",
        "--set",
        "train.mixed_precision=bfloat16",
    )
    assert result.exit_code == 0, result.output
    assert "precision: mixed_bfloat16" in result.stderr
    from cnnclf.bundle import load_bundle

    model = load_bundle(tmp_path / "b").model
    assert model.get_layer("conv1").dtype_policy.name == "mixed_bfloat16"
    assert model.get_layer("output").dtype_policy.name == "float32"
    rows = predictions(tmp_path / "b", binary_tree / "test_set")
    assert all(0.0 <= r["probability"] <= 1.0 for r in rows)


@pytest.mark.slow
def test_device_gpu_without_a_gpu_is_one_clear_line(tmp_path, binary_tree):
    config = write_config(tmp_path / "c.yaml", binary_tree)
    result = run_cli("train", "--config", config, "--out", tmp_path / "b", "--device", "gpu")
    assert result.exit_code == 1
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith("error: --device gpu: TensorFlow sees no GPU")
    )
