"""One error family for all of dbward.

Every error knows how it looks on each surface: a PostgreSQL SQLSTATE, a MySQL errno and
SQLSTATE, and an HTTP status. The surfaces (``proxy/postgres.py``, ``proxy/mysql.py``,
``api/``) each have exactly one function that turns a :class:`DbwardError` into their native
error; nothing else formats errors for clients.
"""

from __future__ import annotations

from typing import ClassVar


class DbwardError(Exception):
    """Base of all errors dbward shows to a person.

    ``message`` is a sentence a DBA understands, naming the rule or setting involved.
    """

    sqlstate: ClassVar[str] = "XX000"
    mysql_errno: ClassVar[int] = 1105  # ER_UNKNOWN_ERROR
    mysql_sqlstate: ClassVar[str] = "HY000"
    http_status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(DbwardError):
    """The configuration is invalid; raised at start, never later."""

    code = "config_error"
    http_status = 500


class NotFoundError(DbwardError):
    sqlstate = "42704"
    mysql_errno = 1146
    mysql_sqlstate = "42S02"
    http_status = 404
    code = "not_found"


class ConflictError(DbwardError):
    sqlstate = "23505"
    mysql_errno = 1062
    mysql_sqlstate = "23000"
    http_status = 409
    code = "conflict"


class ValidationError(DbwardError):
    sqlstate = "22023"
    mysql_errno = 1210  # ER_WRONG_ARGUMENTS
    mysql_sqlstate = "HY000"
    http_status = 422
    code = "invalid_request"


class AuthenticationError(DbwardError):
    """Bad user name, password or token. The message never says which part was wrong."""

    sqlstate = "28P01"
    mysql_errno = 1045  # ER_ACCESS_DENIED_ERROR
    mysql_sqlstate = "28000"
    http_status = 401
    code = "authentication_failed"


class ConnectionDenied(DbwardError):
    """The user authenticated but the policy refuses this connection."""

    sqlstate = "28000"
    mysql_errno = 1044  # ER_DBACCESS_DENIED_ERROR
    mysql_sqlstate = "42000"
    http_status = 403
    code = "connection_denied"


class StatementDenied(DbwardError):
    """The policy refused one statement; the session stays usable."""

    sqlstate = "42501"
    mysql_errno = 1142  # ER_TABLEACCESS_DENIED_ERROR family
    mysql_sqlstate = "42000"
    http_status = 403
    code = "statement_denied"


class ApprovalRequired(StatementDenied):
    """The statement needs an approved request before it can run."""

    code = "approval_required"


class UnsupportedFeature(DbwardError):
    sqlstate = "0A000"
    mysql_errno = 1235  # ER_NOT_SUPPORTED_YET
    mysql_sqlstate = "42000"
    http_status = 400
    code = "unsupported"


class ProtocolError(DbwardError):
    """A malformed or unexpected message; ends the session that sent it, never the process."""

    sqlstate = "08P01"
    mysql_errno = 1047  # ER_UNKNOWN_COM_ERROR
    mysql_sqlstate = "08S01"
    http_status = 400
    code = "protocol_error"


class UpstreamError(DbwardError):
    """dbward could not reach or log in to the target database."""

    sqlstate = "08001"
    # ER_CONNECT_TO_FOREIGN_DATA_SOURCE; not 2003, a client-side code libmariadb rejects from a server
    mysql_errno = 1429
    mysql_sqlstate = "HY000"
    http_status = 502
    code = "upstream_unavailable"


class AuditUnavailable(DbwardError):
    """The audit journal cannot be written, so nothing is allowed to run (fail closed)."""

    sqlstate = "58030"
    mysql_errno = 1105
    mysql_sqlstate = "HY000"
    http_status = 503
    code = "audit_unavailable"


class QueryCanceled(DbwardError):
    sqlstate = "57014"
    mysql_errno = 1317  # ER_QUERY_INTERRUPTED
    mysql_sqlstate = "70100"
    http_status = 408
    code = "query_canceled"


class SessionKilled(DbwardError):
    sqlstate = "57P01"
    mysql_errno = 1927  # ER_CONNECTION_KILLED
    mysql_sqlstate = "70100"
    http_status = 410
    code = "session_killed"


class IdleTimeout(DbwardError):
    sqlstate = "57P05"
    mysql_errno = 4031  # ER_CLIENT_INTERACTION_TIMEOUT
    mysql_sqlstate = "HY000"
    http_status = 408
    code = "idle_timeout"
