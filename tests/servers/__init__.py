"""Real servers for the tests, started by fixtures on 127.0.0.1 in private directories."""
