"""Built-in backends.  Each module is a pluggy plugin that registers its kind
in ``nxauth_register_backends``; optional dependencies are imported when a
backend is first built."""
