"""Plumbing shared by the services: no domain words."""
