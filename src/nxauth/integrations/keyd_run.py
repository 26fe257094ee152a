"""sshd's ``AuthorizedKeysCommand`` with the authorized-keys daemon:
``python -I -S keyd_run.py --socket PATH ... %u %t %k``.

Three lines, so that Python compiles next to nothing on each login: the
client itself, :mod:`nxauth.integrations.keyd_client`, is imported from its
cached byte-code (``pip install`` writes it).  Its directory is appended to
the end of ``sys.path``, so it can shadow nothing; ``__file__`` is absolute
(Python >= 3.9), so no ``os.path`` is needed to find it."""

import sys

sys.path.append(__file__.rpartition("/")[0])
import keyd_client  # type: ignore[import-not-found]

keyd_client.run()
