"""Put ``bench/`` on ``sys.path``, so the peers' scripts share its standard-library modules
(``common``, ``workers``) and, under kiwipy's interpreter, its drivers.

Import it before any of those: ``import _bench_path  # noqa: F401``.
"""

from __future__ import annotations

import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))
