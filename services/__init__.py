"""The MOM backend: ingest, execution, quality, maintenance and inventory services, and their shared plumbing."""
