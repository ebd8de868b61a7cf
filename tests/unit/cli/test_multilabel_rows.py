"""Multi-label predictions rendered (cli/render.py): CSV with the labels space-separated as a
label file takes them back, a table naming each label with its probability or (none)."""

import numpy as np

from cnnclf.cli.render import PredictionRows, render
from cnnclf.inference.predict import interpret_multi_label

NAMES = ["cat", "dog", "sofa"]


def _rows():
    return [
        interpret_multi_label(np.array([0.9, 0.2, 0.64]), NAMES, None, "a.png"),
        interpret_multi_label(np.array([0.1, 0.2, 0.3]), NAMES, None, "long/b.png"),
    ]


def test_csv_has_a_labels_column_and_one_probability_column_per_class():
    assert render(_rows(), "csv", NAMES).splitlines() == [
        "path,labels,p_cat,p_dog,p_sofa",
        "a.png,cat sofa,0.900000,0.200000,0.640000",
        "long/b.png,,0.100000,0.200000,0.300000",
    ]


def test_the_table_shows_each_label_with_its_probability_or_none():
    rows = PredictionRows("table", NAMES, ["a.png", "long/b.png"], "# model m", True)
    text = rows.begin() + "".join(rows.row(p) for p in _rows()) + rows.end()
    assert text.splitlines() == [
        "# model m",
        "path        labels (probability; over threshold)",
        "a.png       cat 0.90, sofa 0.64",
        "long/b.png  (none)",
    ]
