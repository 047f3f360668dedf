"""Sans-IO protocol codecs: bytes in, typed messages out, and back. No asyncio, no sockets."""
