"""`python -m bench`: see bench/__init__.py."""

import sys

from .cli import main

sys.exit(main())
