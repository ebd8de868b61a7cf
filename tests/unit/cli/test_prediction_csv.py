"""predict's CSV rows: every file name comes back from a CSV reader as it went in."""

import csv
import io

from cnnclf.cli.render import PredictionRows
from cnnclf.inference.predict import Prediction

ODD_NAMES = ["a\rb.png", "c\nd.png", 'e"f,g.png', "\udcff.png", "plain.png"]


def _csv(names):
    rows = PredictionRows("csv", ["cat", "dog"], names)
    predictions = [Prediction(n, "cat", 0.9, {"cat": 0.9, "dog": 0.1}) for n in names]
    return rows.begin() + "".join(rows.row(p) for p in predictions)


def test_names_with_cr_lf_quotes_and_odd_bytes_round_trip():
    text = _csv(ODD_NAMES)
    parsed = list(csv.reader(io.StringIO(text, newline="")))
    assert [row[0] for row in parsed[1:]] == ODD_NAMES
    assert '"a\rb.png",cat,' in text  # a CR went out bare before: the row split in two


def test_rows_still_end_in_a_plain_newline():
    text = _csv(["plain.png"])
    assert text == (
        "path,label,probability,p_cat,p_dog\nplain.png,cat,0.900000,0.900000,0.100000\n"
    )
