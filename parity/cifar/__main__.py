"""``python -m parity.cifar``."""

import sys

from parity.cifar.cli import main

sys.exit(main())
