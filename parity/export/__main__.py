"""``python -m parity.export``."""

import sys

from parity.export.cli import main

sys.exit(main())
