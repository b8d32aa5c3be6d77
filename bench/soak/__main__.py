"""``python -m bench.soak``: see ``bench.soak``."""

from bench.soak.run import main

raise SystemExit(main())
