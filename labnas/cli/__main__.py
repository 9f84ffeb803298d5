"""``python -m labnas.cli ARGS``: the same as the ``labnas`` command."""

import sys

from .main import main

sys.exit(main())
