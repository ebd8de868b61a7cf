"""Training: the run (checks, signals, error mapping), the Trainer, callbacks, checkpoints,
the run directory's state machine and placement (tf.distribute).
"""
