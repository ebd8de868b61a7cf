"""`render.model_heading`: the first line of predict's table, naming the model and its classes."""

from cnnclf.cli.render import PredictionRows, model_heading
from cnnclf.inference.predict import Prediction


def test_the_newest_bundle_default_says_so():
    line = model_heading("runs/demo-20261204-030332", ["ankle_boot", "sneaker"], newest=True)
    assert (
        line
        == "# model runs/demo-20261204-030332 (newest under runs/): classes ankle_boot, sneaker"
    )


def test_a_model_given_with_model_is_named_without_the_default_note():
    assert model_heading("b", ["cat", "dog"], newest=False) == "# model b: classes cat, dog"


def test_many_classes_list_eight_then_a_count():
    names = [f"c{i}" for i in range(10)]
    line = model_heading("b", names, newest=False)
    assert line.endswith(": classes c0, c1, c2, c3, c4, c5, c6, c7 and 2 more")
    assert model_heading("b", names[:8], newest=False).endswith("c6, c7")


def test_only_the_table_carries_the_heading():
    p = Prediction(
        path="a.png", label="dog", probability=0.9, probabilities={"cat": 0.1, "dog": 0.9}
    )
    for fmt in ("json", "jsonl", "csv"):
        rows = PredictionRows(fmt, ["cat", "dog"], ["a.png"], heading="# model b: classes cat, dog")
        assert "# model" not in rows.begin() + rows.row(p) + rows.end()
    table = PredictionRows(
        "table", ["cat", "dog"], ["a.png"], heading="# model b: classes cat, dog"
    )
    assert table.row(p).splitlines()[:2] == [
        "# model b: classes cat, dog",
        "path   label  probability",
    ]
