"""``python -m nxauth``."""

from .cli import main

raise SystemExit(main())
