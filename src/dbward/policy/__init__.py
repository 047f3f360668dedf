"""The decision point: grants, query rules and the decisions they produce.

Imports only ``dbward.domain`` and ``dbward.sql``; the proxy and the API call it.
"""
