"""``python -m hyplex``: the same command line as the ``hyplex`` script."""

from hyplex.cli import app

if __name__ == "__main__":  # pragma: no cover - exercised through a subprocess in the tests
    app(prog_name="hyplex")
