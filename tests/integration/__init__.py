"""Integration tests against the real local stack."""
