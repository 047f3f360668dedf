"""The password policy for passwords people choose (console, API, proxy logins)."""

from __future__ import annotations

from dbward.errors import ValidationError


def check_password(password: str, *, username: str, min_length: int, min_classes: int) -> None:
    """Raise :class:`ValidationError` naming what the password lacks."""
    problems: list[str] = []
    if len(password) < min_length:
        problems.append(f"it needs at least {min_length} characters")
    classes = sum(
        (
            any(c.islower() for c in password),
            any(c.isupper() for c in password),
            any(c.isdigit() for c in password),
            any(not c.isalnum() for c in password),
        )
    )
    if classes < min_classes:
        problems.append(
            f"it needs at least {min_classes} of: lower-case letters, upper-case letters, digits, other characters"
        )
    if username and username.lower() in password.lower():
        problems.append("it must not contain the user name")
    if problems:
        raise ValidationError("the password does not meet the password policy: " + "; ".join(problems))
