"""`python -m cnnclf.cli`: the `cnnclf` command (older scripts and the tests call it so)."""

from cnnclf.cli import run

if __name__ == "__main__":
    run()
