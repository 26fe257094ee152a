"""sshd's ``AuthorizedKeysCommand`` with the authorized-keys daemon:
``python -I -S keyd_run.py --socket PATH ... %u %t %k``.

Three lines, so that Python compiles next to nothing on each login: the
client itself, :mod:`nxauth.integrations.keyd_client`, is imported from its
cached byte-code (``pip install`` writes it).  It is appended to the end of
``sys.path``, so it can shadow nothing."""

import os
import sys

sys.path.append(os.path.dirname(os.path.abspath(__file__)))
import keyd_client  # type: ignore[import-not-found]

sys.exit(keyd_client.main())
