"""Durable results: the SQLite store, resume and diff."""
