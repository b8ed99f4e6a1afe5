"""asyncio drivers that do the I/O the engine asks for: TCP, UDP, TLS."""
