"""``python -m parity.convert``."""

import sys

from parity.convert.cli import main

sys.exit(main())
