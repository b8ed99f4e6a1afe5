"""Subcommands of the servprobe CLI, one module each with main(argv) -> int."""
