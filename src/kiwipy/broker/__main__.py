"""``python -m kiwipy.broker``: the local broker in the foreground."""

from kiwipy.broker import main

raise SystemExit(main())
