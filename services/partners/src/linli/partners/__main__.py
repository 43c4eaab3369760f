"""`python -m linli.partners`: the partners service and its operator commands."""

import sys

from .cli import main

sys.exit(main())
