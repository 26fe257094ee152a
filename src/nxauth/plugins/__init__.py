"""Plugins: the hook specifications, the plugin manager, the backend registry."""
