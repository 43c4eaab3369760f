"""`python -m linli.intake`: the intake service and its operator commands."""

import sys

from .cli import main

sys.exit(main())
