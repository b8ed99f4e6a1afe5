"""Reporters: normal, XML, grepable, JSON Lines — all from servprobe.result."""
