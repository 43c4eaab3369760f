"""`python -m linli.notifications`: the notifications service and its operator commands."""

import sys

from .cli import main

sys.exit(main())
