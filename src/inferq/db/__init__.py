"""Relational persistence: schema, engines and migrations."""
