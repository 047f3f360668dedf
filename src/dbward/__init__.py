"""dbward: database access governance.

A proxy that sits between people and their MySQL/MariaDB and PostgreSQL databases,
authenticates them, decides every connection and statement, masks personal data, routes
risky work through approval and keeps a tamper-evident audit trail.
"""

__version__ = "0.1.0"
