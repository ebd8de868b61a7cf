"""preview-augment's captions: a multi-label image is named by its labels, not by the
placeholder single label a multi-label split carries."""

from cnnclf.data.layout import Dataset, Split, multi_label_split
from cnnclf.data.preview import _caption


def test_a_multi_label_caption_lists_its_labels_or_says_none():
    train = multi_label_split(["a.png", "b.png"], [(0, 2), ()])
    dataset = Dataset(["left", "right", "top"], train, Split([], []))
    assert _caption(dataset, 0) == "left top"
    assert _caption(dataset, 1) == "(none)"


def test_a_single_label_caption_is_the_class():
    dataset = Dataset(["cat", "dog"], Split(["a.png"], [1]), Split([], []))
    assert _caption(dataset, 0) == "dog"
