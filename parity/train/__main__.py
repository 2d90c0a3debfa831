"""``python -m parity.train``."""

import sys

from parity.train.cli import main

sys.exit(main())
