"""PostgreSQL wire protocol, sans-IO: messages, frame scanning, SCRAM, parameter decoding.

Counterpart: ``dbward.proxy.postgres`` (the asyncio engine that uses this codec).
"""
