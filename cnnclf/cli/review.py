"""`cnnclf review`: K-fold the training data, rank what looks wrong, apply what a person decided."""

from __future__ import annotations

import csv
import io
import json
import shlex
import sys
from pathlib import Path

import click

from cnnclf.cli.data_option import data_option, with_data_folders
from cnnclf.cli.group import common_options, flags, format_option, set_option

# review.neighbours.DUPLICATE_SIMILARITY, kept here so --help does not import NumPy
# (tests/unit/review pins the two together).
DUPLICATE_DEFAULT = 0.98

TABLE_ROWS = 20


@click.command("review")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    help="YAML config: each fold trains with it, as `cnnclf train` would.",
)
@set_option()
@data_option()
@click.option(
    "--folds",
    type=click.IntRange(min=2),
    default=5,
    show_default=True,
    help="K: stratified folds; each image is predicted by the model that did not train on it.",
)
@click.option(
    "--repeats",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="R: draw the K folds R times (the next seed each time) and average each image's "
    "out-of-fold probabilities; R times the training for a better ranking (see the review "
    "guide).",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    help="The review folder (default: runs/review-<config>-<time>). Run again with the same "
    "--out to resume: finished folds are reused.",
)
@format_option(
    "How the issues are printed (issues.csv/issues.json are written either way).",
    choices=("table", "json", "csv"),
    dest="output_format",
)
@click.option(
    "--duplicate-threshold",
    type=click.FloatRange(0.0, 1.0),
    default=DUPLICATE_DEFAULT,
    show_default=True,
    help="Embedding similarity (centred cosine, in every fold model) at which two images are "
    "candidate near duplicates; the pixels must confirm them (see the review guide).",
)
@click.option(
    "--apply",
    "decisions",
    type=click.Path(dir_okay=False),
    help="Apply a decisions.csv from the review page (moves files or writes a corrected "
    "label file; writes an undo log first). Multi-label: a relabel's label is the image's new "
    "set of classes, space-separated.",
)
@click.option(
    "--review",
    "review_dir",
    type=click.Path(file_okay=False),
    help="With --apply: the review folder (default: the folder holding DECISIONS).",
)
@click.option(
    "--dry-run", is_flag=True, help="With --apply: print what would change, change nothing."
)
@click.option(
    "--undo",
    "undo_log",
    type=click.Path(dir_okay=False),
    help="Undo an --apply from its undo log (REVIEW/applied/<digest>.json).",
)
@common_options
def review(
    config_path, overrides, data_dir, folds, repeats, out_dir, output_format,
    duplicate_threshold, decisions, review_dir, dry_run, undo_log,
):  # fmt: skip
    """Find likely mislabeled, ambiguous, near-duplicate and odd images.

    \b
      cnnclf review --config configs/demo.yaml --out runs/review-demo
      (open runs/review-demo/index.html, decide, download decisions.csv;
       or: cnnclf serve --review runs/review-demo, decide, Save)
      cnnclf review --apply ~/Downloads/decisions.csv --review runs/review-demo
      cnnclf review --undo runs/review-demo/applied/<digest>.json
    """
    if undo_log:
        _undo(undo_log)
        return
    if decisions:
        _apply(decisions, review_dir, dry_run)
        return
    if not config_path:
        raise click.UsageError("--config is required (or --apply DECISIONS / --undo LOG)")
    settings = {"folds": folds, "repeats": repeats, "duplicate_threshold": duplicate_threshold}
    _review(config_path, overrides, data_dir, settings, out_dir, output_format)


def _review(config_path, overrides, data_dir, settings: dict, out_dir, output_format) -> None:
    """`settings`: review()'s folds, repeats and duplicate_threshold."""
    from cnnclf.config import load_config
    from cnnclf.errors import RunStopped
    from cnnclf.review.run import review as run_review

    config = load_config(
        config_path, with_data_folders(overrides, data_dir) if data_dir else overrides
    )
    state = flags()
    try:
        result = run_review(
            config,
            **settings,
            out_dir=out_dir,
            config_path=config_path,
            verbose=state["verbose"],
        )
    except RunStopped as exc:
        if state["debug"]:
            raise
        click.echo(f"{'' if exc.exit_code in (130, 143) else 'error: '}{exc}", err=True)
        folder = Path(exc.destination).parent.parent  # REVIEW/folds[-repeat-R]/fold-K
        words = ["cnnclf", "review", "--config", str(config_path)]
        for o in overrides:
            words += ["--set", o]
        words += ["--data", str(data_dir)] if data_dir else []
        words += ["--folds", str(settings["folds"])]
        words += ["--repeats", str(settings["repeats"])] if settings["repeats"] > 1 else []
        words += ["--out", str(folder)]
        if settings["duplicate_threshold"] != DUPLICATE_DEFAULT:
            words += ["--duplicate-threshold", str(settings["duplicate_threshold"])]
        words += ["--format", output_format] if output_format != "table" else []
        click.echo("resume with: " + shlex.join(words), err=True)
        sys.exit(exc.exit_code)
    rows = [issue.to_json() for issue in result.issues]
    if output_format == "json":
        click.echo(json.dumps(rows, indent=1))
    elif output_format == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]) if rows else ["path"])
        writer.writeheader()
        writer.writerows(rows)
        click.echo(buffer.getvalue(), nl=False)
    else:
        _table(rows)
    click.echo(
        f"review: {result.folder}  ({len(rows)} issues in {result.images} images; "
        f"{result.seconds:.1f} s); open {result.folder / 'index.html'}",
        err=output_format != "table",
    )


def _table(rows: list[dict]) -> None:
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["issue"]] = counts.get(row["issue"], 0) + 1
    click.echo(", ".join(f"{n} {kind}" for kind, n in counts.items()) or "no issues found")
    for row in rows[:TABLE_ROWS]:
        # A multi-label row may suggest the empty set: no label at all.
        shown = row["suggested"] or ("(no label)" if row["issue"] == "label" else "")
        suggested = f" -> {shown}" if shown else ""
        # Multi-label rows say which class is missing or extra: the sets alone hide it.
        detail = f"  ({row['detail']})" if row["issue"] == "label" and row["detail"] else ""
        click.echo(
            f"{row['issue']:<15} {row['score']:.3f}  "
            f"{row['label'] or '?'}{suggested}  {row['path']}{detail}"
        )
    if len(rows) > TABLE_ROWS:
        click.echo(f"... and {len(rows) - TABLE_ROWS} more (issues.csv lists every one)")


def _apply(decisions, review_dir, dry_run: bool) -> None:
    from cnnclf.review import apply
    from cnnclf.review.run import read_plan

    folder = Path(review_dir) if review_dir else Path(decisions).resolve().parent
    if not review_dir and not (folder / "review.json").exists():
        raise click.UsageError(
            f"--apply {decisions}: not inside a review folder; add --review REVIEW_FOLDER"
        )
    plan_data = read_plan(folder)
    apply.refuse_applied(folder, Path(decisions))
    chosen = apply.read_decisions(Path(decisions), plan_data["class_names"])
    plan = apply.plan(chosen, plan_data)
    apply.refuse_earlier_copies(folder, plan)  # before any line: a dry run says it too
    for line in plan.lines:
        click.echo(("would " if dry_run else "") + line)
    if dry_run:
        click.echo(f"dry run: {len(plan.moves)} moves, {len(plan.copies)} files; nothing changed")
        return
    log = apply.apply(folder, Path(decisions), plan)
    click.echo(f"applied: {len(plan.moves)} moves, {len(plan.copies)} files; undo log {log}")
    click.echo(f"to undo: cnnclf review --undo {log}")


def _undo(log) -> None:
    from cnnclf.review import apply

    for line in apply.undo(Path(log)):
        click.echo(line)
    click.echo(f"undone: {log}")
