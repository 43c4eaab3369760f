"""`python -m linli.scheduling`: the scheduling service and its operator commands."""

import sys

from .cli import main

sys.exit(main())
