"""Shared helpers of the tests: real servers started on 127.0.0.1 in private
directories (slapd, sshd, PAM through pam_wrapper), transport keys, the docs'
code blocks.  Imported by the tests as ``tests.support.*``."""

from pathlib import Path

#: The repository's top directory.
ROOT = Path(__file__).resolve().parents[2]
