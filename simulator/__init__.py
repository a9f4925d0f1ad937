"""A plant that sends realistic events to ingest; for now a small built-in scenario and the demo."""
