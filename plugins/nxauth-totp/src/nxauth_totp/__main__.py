"""``python -m nxauth_totp``: the ``nxauth-totp`` command."""

import sys

from .cli import main

sys.exit(main())
