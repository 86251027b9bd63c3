"""Forgetting-mitigation methods, one module each, registered by name in methods.registry."""
