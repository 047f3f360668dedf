"""Sans-IO codec of the MySQL/MariaDB client/server protocol (no asyncio here).

``packets`` frames bytes, ``messages`` types the packets, ``rows`` encodes result rows,
``scanner`` follows responses without assembling them, ``auth`` does the scramble math and
``split`` cuts COM_QUERY text into statements. The asyncio shell is ``proxy/mysql.py``.
"""
