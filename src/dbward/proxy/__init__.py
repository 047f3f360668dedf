"""The asyncio shell around the wire codecs: listeners, engines, the gate, upstream connections."""
