"""`python -m cnnclf`: the `cnnclf` command."""

from cnnclf.cli import run

if __name__ == "__main__":
    run()
