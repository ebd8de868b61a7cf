"""`cnnclf tune`: a hyperparameter search on Optuna, shared by every process that runs it.

Optuna's RDB storage is the distributed engine: every `cnnclf tune` process pointed at the same
storage and study joins one search (SQLite for one machine, PostgreSQL or MySQL for many).
Optuna is an optional extra (`pip install 'cnnclf[tune]'`), imported only inside functions.

    space.py     the search space: what a trial draws, as `--set` overrides on the config
    budget.py    how N trials in all are shared by workers that may die (pure decisions)
    pruning.py   the pruners, and the Keras callback that reports each epoch to a trial
    devices.py   one trial per GPU: which GPU a worker on a many-GPU machine takes
    study.py     the worker: storage, study, the trial loop, waiting for the others
    reports.py   best.yaml, trials.csv, the plots and the summary rows
"""
