"""`python -m linli.console`: the staff console and its operator commands."""

import sys

from .cli import main

sys.exit(main())
