"""Small matchers shared by the policy evaluator and the masking plan: name globs, client
addresses and subjects. No I/O; imports only ``dbward.domain`` and the subject model."""

from __future__ import annotations

import fnmatch
import re
from functools import lru_cache
from ipaddress import IPv4Address, IPv6Address, ip_address

from dbward.domain import Principal
from dbward.policy.subject import Subject, SubjectType


def glob(pattern: str) -> re.Pattern[str]:
    """A shell glob (``sales_*``) as a case-insensitive regular expression."""
    return re.compile(fnmatch.translate(pattern), re.IGNORECASE)


@lru_cache(maxsize=4096)
def parse_ip(host: str) -> IPv4Address | IPv6Address | None:
    """A client address, with an IPv6 zone dropped and IPv4-mapped IPv6 read as IPv4."""
    try:
        addr = ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(addr, IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def subject_matches(subject: Subject, p: Principal) -> bool:
    match subject.type:
        case SubjectType.USER:
            return subject.name == p.username
        case SubjectType.GROUP:
            return subject.name in p.groups
        case SubjectType.ROLE:
            return subject.name in p.roles
        case _:
            return False
