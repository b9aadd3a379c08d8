"""Restoration tools, their registry, and the shared model-call pool that runs them."""
