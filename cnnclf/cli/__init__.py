"""The `cnnclf` command line: parse, call one plain function, format the result.

group.py      the click group `main`, the options every command takes, errors -> exit codes
entry.py      `run`, the executable: `main`, then an exit that skips a slow teardown
fast_exit.py  that exit (the CLI's one private API: `atexit._run_exitfuncs`)
_lazy.py      the one door to the modules that need TensorFlow (or another model runtime)
bundles.py    which model a command runs: --model resolved, options checked, loaded
render.py     tables, JSON, CSV and Markdown for predictions and reports
train.py, predict.py (predict, evaluate, explain), export.py, data.py (check-data,
preview-augment), config.py, summary.py, serve.py: the commands

Importing this package imports neither TensorFlow nor the modules that need it, so
`cnnclf --help` and config errors answer instantly.
"""

from cnnclf.cli.config import config_command
from cnnclf.cli.data import check_data_command, preview_augment
from cnnclf.cli.entry import run
from cnnclf.cli.export import export
from cnnclf.cli.group import main
from cnnclf.cli.init import init_command
from cnnclf.cli.lr_find import lr_find_command
from cnnclf.cli.predict import evaluate, explain, predict
from cnnclf.cli.review import review
from cnnclf.cli.serve import serve_command
from cnnclf.cli.summary import summary_command
from cnnclf.cli.train import train
from cnnclf.cli.tune import tune

for _command in (
    train,
    predict,
    evaluate,
    export,
    explain,
    preview_augment,
    check_data_command,
    config_command,
    summary_command,
    serve_command,
    init_command,
    lr_find_command,
    review,
    tune,
):
    main.add_command(_command)

__all__ = ["main", "run"]

if __name__ == "__main__":  # pragma: no cover
    run()
