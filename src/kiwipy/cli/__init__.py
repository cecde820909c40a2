"""The ``kiwipy`` command line (``pip install kiwipy[cli]``): workers, sending, watching, the demo.

Run ``kiwipy --help``; ``python -m kiwipy.cli`` is the same command.
"""

from kiwipy.cli._app import cli, main

__all__ = ("cli", "main")
