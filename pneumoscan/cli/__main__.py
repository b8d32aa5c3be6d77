"""``python -m pneumoscan.cli``: the ``pneumoscan`` command from a checkout."""

import sys

from pneumoscan.cli import main

sys.exit(main())
