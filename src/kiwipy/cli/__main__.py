"""``python -m kiwipy.cli``: the ``kiwipy`` command."""

from kiwipy.cli._app import main

if __name__ == "__main__":
    raise SystemExit(main(prog_name="kiwipy"))
