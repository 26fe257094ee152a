"""SSH keys: formats, authorized_keys lines and their patterns, certificates, SSHSIG, the key policy.

Pure: no I/O beyond reading a file it is given; nothing here knows the configuration or a backend."""
