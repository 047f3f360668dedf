"""Types of the optional C accelerator (``_speedups.c``); see ``wire/postgres/framing.py``."""

def data_rows(buf: bytes | bytearray, pos: int, end: int, max_length: int, /) -> tuple[int, int]: ...
def mask_span_rows(
    buf: bytes | bytearray,
    start: int,
    end: int,
    limit: int,
    k: int,
    first: int,
    last: int,
    unit: int,
    separators: bytes,
    /,
) -> tuple[bytes, int, int]: ...
def mysql_mask_span_rows(
    buf: bytes | bytearray,
    pos: int,
    n: int,
    seq: int,
    cap: int,
    k: int,
    first: int,
    last: int,
    unit: int,
    separators: bytes,
    /,
) -> tuple[bytes, int, int, int]: ...
