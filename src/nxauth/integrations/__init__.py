"""How nxauth meets SSH: behind the system OpenSSH (authorized-keys, the key
daemon, the login forced command), the embedded asyncssh server, and the
stage-2 line protocol both speak."""
