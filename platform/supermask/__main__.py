"""`python -m supermask ...`: the same as the `supermask` command."""

import sys

from supermask.interface.cli import main

sys.exit(main())
