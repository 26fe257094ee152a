"""``python -m nxauth.cli``."""

from nxauth.cli import main

raise SystemExit(main())
