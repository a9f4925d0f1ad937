"""ERP import: production orders, products with BOMs and routings, and material lots from CSV and
ISA-95 B2MML XML, as canonical plan events (`mom import`). The parsers are pure; importer.py sends."""
