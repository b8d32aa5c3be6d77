"""``python -m cli``: the ``pneumoscan`` command from a checkout."""

import sys

from cli import main

sys.exit(main())
