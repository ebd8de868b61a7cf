"""Where training runs: device choice, tf.distribute strategy, mixed precision and XLA.

The decisions are plain functions of the visible devices (`plan_strategy`, `plan_precision`,
`plan_jit_compile`), so they are testable without a GPU; `make_strategy` then builds
TensorFlow's own strategy:
`MirroredStrategy` across local GPUs (or logical CPUs), `MultiWorkerMirroredStrategy` across
machines described by `TF_CONFIG`, `OneDeviceStrategy` for a single GPU, or the default
strategy. One GPU gets a strategy too because Keras hands datasets to the strategy: the
default one passes batches through in host memory, and every step starts by copying its batch
to the GPU, while `OneDeviceStrategy` (like the mirrored ones) prefetches the next batch onto
the device while the current step runs.

The global batch size is `data.batch_size`: each of N replicas gets batch_size / N images per
step, and gradients are averaged across replicas, so one step means the same thing on 1 or 8
devices. `train.scale_learning_rate: true` multiplies the learning rate by N for users who
instead keep the per-replica batch constant.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

from cnnclf.errors import CnnclfError, ConfigError

# Test and development knob: split the CPU into N logical devices (to exercise `mirrored`
# without GPUs). Must be read before TensorFlow initialises its devices.
LOGICAL_CPUS_ENV = "CNNCLF_LOGICAL_CPUS"


@dataclass(frozen=True)
class Placement:
    """What runs where, as the first lines of `train` report it."""

    devices: list[str]
    strategy: str  # "default" | "one_device" | "mirrored" | "multi_worker"
    replicas: int
    precision: str  # "float32" | "mixed_float16" | "mixed_bfloat16"
    is_chief: bool = True
    jit_compile: bool = False  # the training step (or each replica's part of it) in XLA

    def describe(self) -> str:
        return (
            f"devices: {', '.join(self.devices)}; strategy: {self.strategy}; "
            f"replicas: {self.replicas}; precision: {self.precision}; "
            f"jit_compile: {str(self.jit_compile).lower()}"
        )


def plan_strategy(distribute: str, gpus: list[str], tf_config: str | None = None) -> str:
    """The strategy for train.distribute given the visible GPUs (`auto`: mirrored for 2+,
    one_device for one, so its batches are prefetched to it)."""
    if distribute == "auto":
        return "mirrored" if len(gpus) > 1 else ("one_device" if gpus else "default")
    if distribute == "none":
        return "default"
    if distribute == "multi_worker":
        if not tf_config:
            raise ConfigError(
                "train.distribute: multi_worker needs the cluster in the "
                "TF_CONFIG environment variable (see README, Scaling out)"
            )
        try:
            cluster = json.loads(tf_config)
            cluster["cluster"], cluster["task"]["type"], cluster["task"]["index"]
        except (ValueError, KeyError, TypeError):
            raise ConfigError(
                'TF_CONFIG: must be JSON like {"cluster": {"worker": '
                '["host1:port", "host2:port"]}, "task": {"type": '
                '"worker", "index": 0}}'
            ) from None
    return distribute


def plan_precision(setting: str, gpus: list[dict]) -> str:
    """The Keras dtype policy for train.mixed_precision.

    `auto` picks a 16-bit policy only where it pays, on GPUs with tensor cores:
    - bfloat16 when every visible GPU has compute capability 8.0 or newer (Ampere, Hopper and
      later have bfloat16 tensor cores). bfloat16 keeps float32's 8-bit exponent, so gradients
      do not underflow and no loss scaling is needed: nothing to tune, nothing to skip.
    - float16, with dynamic loss scaling, when every GPU is 7.0 or newer but some are below
      8.0 (Volta, Turing: float16 tensor cores only; bfloat16 would run on the slow path).
    - float32 otherwise, and on CPUs. On this project's AMX-capable 2-core machine, bfloat16
      trained the tutorial model ~11% faster from in-memory arrays (best epochs 1449-1523 vs
      1312-1335 img/s), with held-out accuracy 0.8727 vs 0.8770 on pullover vs coat (5 paired
      seeds, within noise). That is too small a gain to make every CPU user's bundle a
      bfloat16 one (and on CPUs without native bfloat16 it is emulated, and slower);
      `bfloat16` remains one setting away.

    Args:
        setting: auto | float16 | bfloat16 | none.
        gpus: one dict per visible GPU with a `compute_capability` (major, minor) tuple.

    Returns:
        "float32", "mixed_float16" or "mixed_bfloat16".

    Example:
        >>> plan_precision("auto", [{"compute_capability": (8, 0)}])
        'mixed_bfloat16'
    """
    if setting == "none":
        return "float32"
    if setting == "float16":
        return "mixed_float16"
    if setting == "bfloat16":
        return "mixed_bfloat16"
    if not gpus:
        return "float32"
    capability = min(tuple(g.get("compute_capability") or (0, 0)) for g in gpus)
    if capability >= (8, 0):
        return "mixed_bfloat16"
    return "mixed_float16" if capability >= (7, 0) else "float32"


def plan_jit_compile(setting: str | bool, devices: list[str], deterministic: bool = False) -> bool:
    """Whether training compiles its step with XLA (train.jit_compile).

    `auto` is true when the devices include a GPU or TPU, whatever the strategy: there XLA
    fuses the many small kernels of a step and launches fewer of them. It is false on CPU:
    there XLA makes the first epoch slower with compiling (and a short last batch compiles
    once more) while steady epochs run no faster. It is also false under
    train.deterministic, where Keras turns XLA off itself (not every XLA kernel has a
    deterministic version; an explicit `true` with it is refused when the config is read).
    Keras' own `jit_compile="auto"` is false under any tf.distribute strategy; cnnclf instead
    compiles each replica's forward and backward pass there (see `compile_replica_forward`).

    Args:
        setting: auto | True | False.
        devices: the devices training runs on, as `Placement.devices` lists them.
        deterministic: train.deterministic.

    Example:
        >>> plan_jit_compile("auto", ["/physical_device:GPU:0"])
        True
    """
    if setting != "auto":
        return bool(setting)
    accelerated = any(":GPU:" in d.upper() or ":TPU:" in d.upper() for d in devices)
    return accelerated and not deterministic


def steps_per_execution(setting: int | str, devices: list[str], steps_per_epoch: int) -> int:
    """Resolves train.steps_per_execution: one step per call on CPU (the step dominates and
    per-batch progress stays live); on an accelerator, enough steps per call that launching
    them costs little next to running them."""
    if setting != "auto":
        return int(setting)
    if any(":GPU:" in d.upper() or ":TPU:" in d.upper() for d in devices):
        return max(1, min(32, steps_per_epoch))
    return 1


def compile_replica_forward(model):
    """`model` for training, with its forward pass, and so its gradient, compiled by XLA.

    Why not Keras' `compile(jit_compile=True)` under MirroredStrategy: Keras compiles the whole
    step, `strategy.run` over every replica and the optimizer's cross-replica gradient sum
    included, as one XLA cluster on one device, which then cannot reach the other replicas'
    variables ("Trying to access resource .../replica_1/... located in device CPU:1 from
    device CPU:0", TensorFlow's XLA known issue "tf.Variable on a different device"; checked
    with 2 logical CPUs, Keras 3.15.1). Compiled here, each replica runs its own XLA
    forward and backward pass on its own device and variables, and the gradient sum and the
    optimizer update stay outside XLA, as they must. The multi-worker loop trains this same
    wrapper, so there too only the per-replica part is compiled.

    Fit the returned model; save `model` itself, which holds every weight (the wrapper adds
    none, in the same order, so a checkpoint fits either).
    """
    import keras
    import tensorflow as tf

    class ReplicaXla(keras.Model):
        def __init__(self):
            super().__init__(name=f"{model.name}_xla")
            self.inner = model
            self.built = True  # the model is built; the wrapper has nothing of its own
            self._forward: Any = None  # traced in compile()

        def compile(self, *args, **kwargs):
            # Traced anew at every compile, as Keras' own step is: fine-tuning changes which
            # layers train (and so how BatchNormalization runs).
            self._forward = tf.function(
                lambda images, training: model(images, training=training), jit_compile=True
            )
            super().compile(*args, **kwargs)

        def call(self, images, training=False):
            return self._forward(images, bool(training))

    return ReplicaXla()


def select_devices(device: str) -> None:
    """Applies --device and the logical-CPU knob; call right after importing TensorFlow."""
    import tensorflow as tf

    n_cpus = int(os.environ.get(LOGICAL_CPUS_ENV, "0") or 0)
    if n_cpus > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(n_cpus)]
        )
    gpus = tf.config.list_physical_devices("GPU")
    if device == "cpu" and gpus:
        tf.config.set_visible_devices([], "GPU")
    elif device == "gpu" and not gpus:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        hint = (
            f" (CUDA_VISIBLE_DEVICES={visible!r})"
            if visible is not None
            else ("; install cnnclf[gpu] and check the NVIDIA driver")
        )
        raise CnnclfError(f"--device gpu: TensorFlow sees no GPU{hint}")


def gpu_details() -> list[dict]:
    """Each visible GPU's TensorFlow name (`/physical_device:GPU:0`), model name and compute
    capability, without starting the runtime."""
    import tensorflow as tf

    details = []
    for gpu in tf.config.get_visible_devices("GPU"):
        info = tf.config.experimental.get_device_details(gpu)
        details.append(
            {
                "device": gpu.name,
                "name": info.get("device_name", gpu.name),
                "compute_capability": info.get("compute_capability"),
            }
        )
    return details


def _device_label(gpu: dict) -> str:
    """`/physical_device:GPU:0 (NVIDIA A100-SXM4-40GB)`: the TensorFlow name, which the `auto`
    settings look for (`:GPU:`), then the model (the same for every GPU of a model)."""
    return gpu["device"] if gpu["name"] == gpu["device"] else f"{gpu['device']} ({gpu['name']})"


def make_strategy(train_config, collective_timeout: float | None = None):
    """Builds the strategy and reports the placement. Returns (strategy, Placement)."""
    import tensorflow as tf

    gpus = gpu_details()
    plan = plan_strategy(
        train_config.distribute, [g["device"] for g in gpus], os.environ.get("TF_CONFIG")
    )
    precision = plan_precision(train_config.mixed_precision, gpus)
    if plan == "multi_worker":
        # Collective ops must be configured before TensorFlow's runtime context starts: this
        # comes before anything that lists logical devices or creates a tensor.
        options = tf.distribute.experimental.CommunicationOptions(
            timeout_seconds=collective_timeout or train_config.collective_timeout
        )
        strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    logical_cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
    if plan == "mirrored":
        devices = None if gpus else logical_cpus  # GPUs are MirroredStrategy's default
        strategy = tf.distribute.MirroredStrategy(devices=devices)
    elif plan == "one_device":
        strategy = tf.distribute.OneDeviceStrategy("/gpu:0" if gpus else "/cpu:0")
    elif plan == "default":
        strategy = tf.distribute.get_strategy()
    devices = [_device_label(g) for g in gpus] or logical_cpus
    jit_compile = plan_jit_compile(train_config.jit_compile, devices, train_config.deterministic)
    return strategy, Placement(
        devices, plan, strategy.num_replicas_in_sync, precision, is_chief(strategy), jit_compile
    )


def is_chief(strategy) -> bool:
    """Only the chief (task `chief`, or worker 0 when there is none) writes the bundle."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return True
    spec = resolver.cluster_spec().as_dict()
    if "chief" in spec:
        return resolver.task_type == "chief"
    return resolver.task_type == "worker" and resolver.task_id == 0


def worker_of(tf_config: str | None) -> tuple[int, int]:
    """(this worker's index, the number of workers) of the cluster `tf_config` describes.

    The chief, when there is one, is worker 0 and the workers follow in their order: the
    numbering every process computes alike from the same TF_CONFIG, so the shards they
    choose by it (`shard_indices`) cover the data without anyone exchanging a word.

    Example:
        >>> task = {"type": "worker", "index": 1}
        >>> worker_of(json.dumps({"cluster": {"worker": ["a:1", "b:1"]}, "task": task}))
        (1, 2)
    """
    plan_strategy("multi_worker", [], tf_config)  # the same errors for a bad TF_CONFIG
    assert tf_config is not None
    cluster = json.loads(tf_config)
    chiefs = len(cluster["cluster"].get("chief", []))
    workers = chiefs + len(cluster["cluster"].get("worker", []))
    kind, index = cluster["task"]["type"], int(cluster["task"]["index"])
    if kind not in ("chief", "worker") or not 0 <= index < workers:
        raise ConfigError(
            f"TF_CONFIG: task {kind} {index} is not one of the cluster's training workers "
            "(chief or worker)"
        )
    return (index if kind == "chief" else chiefs + index), workers


def shard_indices(count: int, worker: int, workers: int) -> list[int]:
    """The positions of the training files that worker `worker` of `workers` reads.

    Files are dealt out in turn (worker i takes i, i + W, i + 2W, ...), so each shard holds
    about 1/W of every class (files are listed class by class). A worker with one file fewer
    repeats its own first file: every worker then runs the same number of steps per epoch
    (a collective operation waits for all of them), every training file is trained on in
    every epoch, and none is fetched twice.

    Example:
        >>> shard_indices(5, 1, 2)
        [1, 3, 1]
    """
    mine = list(range(worker, count, workers))
    share = -(-count // workers)  # ceil
    return (mine + mine[: share - len(mine)]) if mine else []


def workers_agree(strategy, digest: bytes) -> bool:
    """Whether every replica of every worker holds the same `digest`: the same answer on
    all of them, so all stop or none does. Every worker must call it (a collective op).

    The digest travels as float32 numbers of 16 bits each (exact in float32, and a
    type every collective implementation gathers, NCCL's and the CPU's alike); TensorFlow's
    reductions know only SUM and MEAN, so the values are gathered and compared whole.
    """
    import tensorflow as tf

    parts = [float(int.from_bytes(digest[i : i + 2], "big")) for i in range(0, len(digest), 2)]
    mine = tf.constant([parts], tf.float32)

    def replica_value():
        return tf.identity(mine)

    @tf.function
    def gathered():
        return strategy.gather(strategy.run(replica_value), axis=0)

    return bool(tf.reduce_all(gathered() == mine))


def shard_datasets(train_ds, val_ds, by_file: bool = False):
    """Every worker reads its own share of the batches (`AutoShardPolicy.DATA`: element-wise,
    as a file list cannot be sharded by file), or, when the training set was already sharded
    by file (`by_file`: data by URL, training_data.py), the training set as it is (`OFF`).

    Validation stays sharded by element: every worker holds the whole validation set, each
    evaluates its share, and the sums are reduced across workers, so validation metrics (and
    the chief's final pass, which runs outside the strategy) cover the whole set.
    """
    import tensorflow as tf

    def with_policy(ds, policy):
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = policy
        return ds.with_options(options)

    policy = tf.data.experimental.AutoShardPolicy
    return [
        with_policy(train_ds, policy.OFF if by_file else policy.DATA),
        with_policy(val_ds, policy.DATA),
    ]
