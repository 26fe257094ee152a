"""``python -m nxauth``."""

from nxauth.cli import main

raise SystemExit(main())
