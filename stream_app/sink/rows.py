"""Messages -> checked JSONEachRow lines, the form in which the sink inserts rows.

The records on the sink's topics are JSON objects whose keys are the table's column
names, so the cheapest correct insert is the message itself, in ``JSONEachRow``: no
Python row building, no Python serialisation to ClickHouse's Native format (together
~3/4 of the sink's CPU before). ClickHouse's text parsers are lenient where a Python
client is not (300 lands in a UInt8 as 44, ``null`` as the column default, a number in
a String column as its text), so every message is checked first, in Python, against
the column types ClickHouse reports for the table:

- a message that is not a JSON object, lacks a required field, or holds a value that
  does not fit its column is refused here, with the column and the value in the reason
  (the sink dead-letters it);
- a message that lacks optional fields gets the record type's defaults (the only case
  in which a line is re-serialised).

What the checks cannot see (a CHECK constraint, a date ClickHouse reads differently)
ClickHouse still refuses, and the writer isolates those rows by bisection.
"""

from __future__ import annotations

import re
from dataclasses import MISSING, dataclass, fields
from datetime import datetime
from typing import Any, Mapping

import orjson

from stream_app.sink.tables import TableSpec

_REQUIRED = object()
_INT_RANGES = {f"{sign}Int{bits}": ((0, 2 ** bits - 1) if sign == "U" else (-2 ** (bits - 1), 2 ** (bits - 1) - 1))
               for sign in ("U", "") for bits in (8, 16, 32, 64)}
_WRAPPER = re.compile(r"^(Nullable|LowCardinality|Array)\((.*)\)$")


def is_time(value: Any) -> bool:
    if type(value) is not str:
        return False
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


def column_test(clickhouse_type: str, value: str = "v") -> str | None:
    """A Python expression, true when the JSON value named ``value`` fits a column of
    this type; None for a type this module does not know (ClickHouse alone decides)."""
    wrapper = _WRAPPER.match(clickhouse_type)
    if wrapper:
        kind, inner_type = wrapper.groups()
        item = "x" if value != "x" else "y"
        inner = column_test(inner_type, item if kind == "Array" else value)
        if inner is None:
            return None
        if kind == "Nullable":
            return f"({value} is None or {inner})"
        if kind == "Array":
            return f"(type({value}) is list and all({inner} for {item} in {value}))"
        return inner  # LowCardinality
    if clickhouse_type == "String":
        return f"type({value}) is str"
    if clickhouse_type == "Bool":
        return f"type({value}) is bool"
    if clickhouse_type in ("Float32", "Float64"):
        return f"type({value}) in (int, float)"
    if clickhouse_type in _INT_RANGES:
        low, high = _INT_RANGES[clickhouse_type]
        return f"(type({value}) is int and {low} <= {value} <= {high})"
    if clickhouse_type.startswith(("DateTime64(", "DateTime(")) or clickhouse_type in ("DateTime", "Date"):
        return f"is_time({value})"
    return None


def _compile(source: str, name: str):
    namespace: dict[str, Any] = {"is_time": is_time}
    exec(compile(source, f"<sink rows: {name}>", "exec"), namespace)
    return namespace[name]


class RowError(ValueError):
    """A message that cannot be a row of its table (the reason says why); ``record``:
    its fields when it was a JSON object (they say which tweet and run it belongs to)."""

    def __init__(self, reason: str, record: dict[str, Any] | None = None) -> None:
        super().__init__(reason)
        self.record = record or {}


@dataclass(frozen=True)
class Row:
    """One message on its way into a table."""
    payload: bytes            # the message as it came from Kafka (dead-lettered as is)
    record: dict[str, Any]    # its fields, defaults filled in
    line: bytes               # what is inserted (JSONEachRow)


class RowFormat:
    """How the messages of one table are checked and turned into JSONEachRow lines."""

    def __init__(self, spec: TableSpec, column_types: Mapping[str, str]) -> None:
        self.spec = spec
        defaults: dict[str, Any] = {}
        for f in fields(spec.record_type):
            if f.default is not MISSING:
                defaults[f.name] = f.default
            elif f.default_factory is not MISSING:
                defaults[f.name] = f.default_factory()
        tests = {column: column_test(column_types[column]) for column in spec.columns}
        self._columns = [(column, defaults.get(column, _REQUIRED), column_types[column],
                          _compile(f"def fits(v): return {tests[column]}", "fits") if tests[column] else None)
                         for column in spec.columns]
        # The usual message has every column, each of the right type: one generated
        # expression tells (a loop over 35 columns cost ~3x more); anything else takes
        # the column-by-column path below, which fills defaults and names the culprit.
        clauses = [f"({column_test(column_types[c], f'd[{c!r}]')})" if t else f"({c!r} in d)"
                   for c, t in tests.items()]
        self._fits_as_is = _compile("def complete(d):\n    try:\n        return " + " and ".join(clauses)
                                    + "\n    except KeyError:\n        return False", "complete")

    def row(self, payload: bytes) -> Row:
        """The message as a row to insert; raises :class:`RowError`."""
        try:
            record = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            raise RowError(f"not JSON: {exc}") from exc
        if type(record) is not dict:
            raise RowError(f"expected a JSON object, got {type(record).__name__}")
        if self._fits_as_is(record):
            return Row(payload, record, payload)
        for column, default, clickhouse_type, fits in self._columns:
            if column not in record:
                if default is _REQUIRED:
                    raise RowError(f"missing field {column!r}", record)
                record[column] = default
            elif fits is not None and not fits(record[column]):
                raise RowError(f"column `{column}` ({clickhouse_type}) cannot hold "
                               f"{record[column]!r:.80}", record)
        return Row(payload, record, orjson.dumps(record))
