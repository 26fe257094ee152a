"""``python -m nxauth.cli``."""

from . import main

raise SystemExit(main())
