"""Targets, port lists, the port table and the connect/UDP port scan."""
