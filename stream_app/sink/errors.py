"""Which insert failures are about the rows (permanent) and which are about ClickHouse
(transient).

A permanent error is one that retrying the same rows can never fix: a value that does
not fit its column, a CHECK constraint, text ClickHouse cannot parse. The sink isolates
the rows at fault and dead-letters them. Everything else — the server down or slow, a
timeout, too many parts, memory, even a missing table (a deployment problem, not the
rows') — is transient: the batch is retried with backoff and never dropped.
"""

from __future__ import annotations

import re
import struct

from clickhouse_connect.driver.exceptions import DatabaseError, DataError

# ClickHouse error codes that blame the data of the insert (src/Common/ErrorCodes.cpp).
ROW_ERROR_CODES = frozenset({
    6,    # CANNOT_PARSE_TEXT
    26,   # CANNOT_PARSE_QUOTED_STRING
    27,   # CANNOT_PARSE_INPUT_ASSERTION_FAILED
    38,   # CANNOT_PARSE_DATE
    41,   # CANNOT_PARSE_DATETIME
    53,   # TYPE_MISMATCH
    69,   # ARGUMENT_OUT_OF_BOUND
    70,   # CANNOT_CONVERT_TYPE
    72,   # CANNOT_PARSE_NUMBER
    117,  # INCORRECT_DATA
    131,  # TOO_LARGE_STRING_SIZE
    321,  # VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE
    469,  # VIOLATED_CONSTRAINT
})
_CODE = re.compile(r"Code: (\d+)\.")


class ChaosInsertError(ConnectionError):
    """Raised by the chaos switch (tests only): looks like a connection failure."""


def error_code(exc: BaseException) -> int | None:
    match = _CODE.search(str(exc))
    return int(match[1]) if match else None


def is_row_error(exc: BaseException) -> bool:
    """True when the rows themselves are at fault (retrying them cannot help)."""
    if isinstance(exc, ChaosInsertError):
        return False
    if isinstance(exc, DataError):  # clickhouse-connect could not serialise a value
        return True
    if isinstance(exc, (ValueError, TypeError, OverflowError, struct.error)):
        return True  # raised while converting a Python value for its column
    if isinstance(exc, DatabaseError):
        return error_code(exc) in ROW_ERROR_CODES
    return False


def describe(exc: BaseException) -> str:
    """One line naming the error, for logs and dead-letter reasons."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}"[:500]
