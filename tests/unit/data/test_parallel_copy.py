"""The batch with `parallel_copy` set, and the private TensorFlow API it is built on.

A TensorFlow upgrade that changes that API makes the pipeline fall back to the plain batch
without a word (the same batches, more slowly): these tests are where it shows.
"""

import inspect

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # imports TensorFlow


@pytest.fixture(scope="module")
def tf():
    """TensorFlow, imported when a test runs, not when pytest collects (the fast tier has none)."""
    return pytest.importorskip("tensorflow")


PRIVATE_API = (
    "cnnclf/data/parallel_copy.py builds tf.data's batch op itself through TensorFlow's private "
    "API, and TensorFlow {version} changed it: {problem}. The pipeline now falls back to the "
    "plain ds.batch() (same batches, slower): update parallel_copy.py for this TensorFlow."
)


def private_api_changed(problem: str) -> str:
    import tensorflow as tf

    return PRIVATE_API.format(version=tf.__version__, problem=problem)


def dataset(n: int = 10):
    """(uint8 image, float label) elements, as the pipeline's in-place read gives them."""
    import tensorflow as tf

    images = np.arange(n * 4 * 4 * 3, dtype=np.uint8).reshape(n, 4, 4, 3)
    labels = (np.arange(n) % 2).astype(np.float32)[:, None]
    return tf.data.Dataset.from_tensor_slices((images, labels))


def test_the_private_api_is_still_there_with_the_signature_we_use(tf):
    try:
        from tensorflow.python.data.ops import dataset_ops
        from tensorflow.python.ops import gen_dataset_ops
    except ImportError as exc:
        pytest.fail(private_api_changed(f"import failed ({exc})"))
    assert isinstance(getattr(dataset_ops, "UnaryDataset", None), type), private_api_changed(
        "tensorflow.python.data.ops.dataset_ops.UnaryDataset is gone"
    )
    batch_op = getattr(gen_dataset_ops, "batch_dataset_v2", None)
    assert batch_op is not None, private_api_changed("gen_dataset_ops.batch_dataset_v2 is gone")
    parameters = inspect.signature(batch_op).parameters
    wanted = {"input_dataset", "batch_size", "drop_remainder", "parallel_copy", "output_types"}
    assert wanted <= set(parameters), private_api_changed(
        f"batch_dataset_v2 takes {sorted(parameters)}, we pass {sorted(wanted)}"
    )
    ds = dataset()
    for attribute in ("_variant_tensor", "_common_args"):
        assert hasattr(ds, attribute), private_api_changed(f"datasets have no {attribute}")
    assert callable(getattr(ds.element_spec[0], "_batch", None)), private_api_changed(
        "TensorSpec has no _batch"
    )


def test_it_builds_the_batch_op_with_parallel_copy_set(tf):
    from cnnclf.data.parallel_copy import batch_copying_in_parallel, parallel_copy_batch

    try:
        parallel_copy_batch(dataset(), 4)
    except (ImportError, AttributeError, TypeError) as exc:
        pytest.fail(private_api_changed(f"{type(exc).__name__}: {exc}"))
    batched = batch_copying_in_parallel(dataset(), 4)
    graph = tf.compat.v1.GraphDef.FromString(batched._as_serialized_graph().numpy())
    batches = [node for node in graph.node if node.op == "BatchDatasetV2"]
    assert len(batches) == 1 and batches[0].attr["parallel_copy"].b, private_api_changed(
        "the batch op it builds has no parallel_copy"
    )


@pytest.mark.parametrize("n, batch_size", [(10, 4), (8, 4), (3, 5)])
def test_it_yields_the_same_batches_as_the_plain_batch(tf, n, batch_size):
    from cnnclf.data.parallel_copy import batch_copying_in_parallel

    plain = dataset(n).batch(batch_size)
    parallel = batch_copying_in_parallel(dataset(n), batch_size)
    assert parallel.element_spec == plain.element_spec
    got, expected = list(parallel.as_numpy_iterator()), list(plain.as_numpy_iterator())
    assert len(got) == len(expected)
    for (images, labels), (want_images, want_labels) in zip(got, expected):
        assert images.dtype == want_images.dtype and labels.dtype == want_labels.dtype
        np.testing.assert_array_equal(images, want_images)
        np.testing.assert_array_equal(labels, want_labels)
