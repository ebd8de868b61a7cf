"""Rendering predictions as a table, JSON or CSV for the terminal or a file."""

from __future__ import annotations

import csv
import io
import json

from cnnclf.predict import Prediction


def render(predictions: list[Prediction], fmt: str, class_names: list[str]) -> str:
    if fmt == "json":
        return json.dumps([p.to_json() for p in predictions], indent=2)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["path", "label", "probability"] + [f"p_{c}" for c in class_names])
        for p in predictions:
            writer.writerow([p.path, p.label, f"{p.probability:.6f}"]
                            + [f"{p.probabilities[c]:.6f}" for c in class_names])
        return out.getvalue().rstrip("\n")
    if not predictions:
        return ""
    width = max(len(p.path) for p in predictions)
    label_width = max(len(c) for c in class_names)
    return "\n".join(f"{p.path:<{width}}  {p.label:<{label_width}}  {p.probability:.2f}"
                     for p in predictions)
