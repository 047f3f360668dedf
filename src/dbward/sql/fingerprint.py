"""Normalized fingerprints: literals become ``?``, keywords upper case, unquoted identifiers
lower case, whitespace and comments gone, lists of placeholders collapsed to ``(?+)``.

Two statements that differ only in their literal values have the same fingerprint; the
fingerprint is what query rules match and what groups statements in reports. Works on sqlglot
tokens, so it costs a tokenization (~10-15 us for a simple statement) and no parse.
"""

from __future__ import annotations

import hashlib

from sqlglot.tokenizer_core import Token, TokenType

_LITERALS = frozenset(
    {
        TokenType.NUMBER,
        TokenType.STRING,
        TokenType.NATIONAL_STRING,
        TokenType.RAW_STRING,
        TokenType.HEX_STRING,
        TokenType.BIT_STRING,
        TokenType.BYTE_STRING,
        TokenType.HEREDOC_STRING,
        TokenType.UNICODE_STRING,
        TokenType.PLACEHOLDER,
    }
)
_NO_SPACE_BEFORE = frozenset({",", ")", ".", "::", "]"})
_NO_SPACE_AFTER = frozenset({"(", ".", "::", "[", "@", "@@", "$"})
_NAMES = frozenset({TokenType.VAR, TokenType.IDENTIFIER})


def _word(tok: Token) -> str:
    tt = tok.token_type
    text = tok.text
    if tt is TokenType.VAR:
        return text.lower()
    if tt is TokenType.IDENTIFIER:
        low = text.lower()
        if low == text and low.replace("_", "a").isalnum() and not low[:1].isdigit():
            return low
        return '"' + text.replace('"', '""') + '"'
    if text.replace("_", "a").isalnum():
        return text.upper()
    return text


def fingerprint_tokens(tokens: list[Token]) -> str:
    out: list[str] = []
    prev_type: TokenType | None = None
    for tok in tokens:
        tt = tok.token_type
        if tt is TokenType.SEMICOLON:
            continue
        if tt in _LITERALS:
            w = "?"
            if tt is TokenType.NUMBER and out and out[-1] in ("$", ":"):  # $1, :1 parameters
                out.pop()
            elif out and out[-1] == "-" and (len(out) == 1 or out[-2] in ("(", ",", "=", "<", ">", "SELECT")):
                out.pop()  # a negative number is one literal
        elif tt is TokenType.INTRODUCER:
            continue  # _utf8mb4'x' is just 'x'
        else:
            w = _word(tok)
            if tt in _NAMES and out and out[-1] == ":" and prev_type is TokenType.COLON:
                out.pop()
                w = "?"  # :name parameters
        if w == "?" and out and out[-1] == "%":
            out.pop()  # %s parameters
        out.append(w)
        prev_type = tt
    return _collapse(out)


def _collapse(words: list[str]) -> str:
    # ( ? , ? , ? ) -> (?+) and (?+) , (?+) , ... -> (?+)
    res: list[str] = []
    i = 0
    n = len(words)
    while i < n:
        w = words[i]
        if w == "(":
            j = i + 1
            ok = j < n and words[j] == "?"
            while ok and j < n and words[j] == "?":
                if j + 1 < n and words[j + 1] == ",":
                    j += 2
                    continue
                j += 1
                break
            if ok and j < n and words[j] == ")" and words[j - 1] == "?":
                if len(res) >= 2 and res[-1] == "," and res[-2] == "(?+)":
                    res.pop()
                else:
                    res.append("(?+)")
                i = j + 1
                continue
        res.append(w)
        i += 1
    text_parts: list[str] = []
    prev = ""
    for w in res:
        if (
            text_parts
            and w not in _NO_SPACE_BEFORE
            and prev not in _NO_SPACE_AFTER
            and not (
                w in ("(", "(?+)")
                and prev
                and (prev[0].isalpha() or prev[0] in '_"')
                and prev.upper() != prev
            )
        ):
            text_parts.append(" ")
        text_parts.append(w)
        prev = w
    return "".join(text_parts)


def fingerprint_hash(fingerprint: str) -> str:
    return hashlib.blake2b(fingerprint.encode(), digest_size=8).hexdigest()
