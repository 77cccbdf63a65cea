"""The grafana-clickhouse-datasource SQL macros, expanded the way the plugin's backend
does (pkg/macros/macros.go of grafana/clickhouse-datasource, with sqlds' argument
parsing), plus Grafana's ``${var}`` / ``$var`` dashboard variables. Used by the tests
and by anyone who wants to run a panel's SQL by hand (``clickhouse client``)."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from urllib.parse import quote

_MACRO = re.compile(r"\$__(\w+)")


def _args(sql: str, start: int) -> tuple[list[str], int]:
    """Arguments of a macro call whose '(' is at ``start`` (nested parentheses allowed)."""
    depth, current, args = 0, [], []
    for i in range(start, len(sql)):
        char = sql[i]
        if char == "(":
            depth += 1
            if depth == 1:
                continue
        elif char == ")":
            depth -= 1
            if depth == 0:
                args.append("".join(current).strip())
                return [a for a in args if a], i + 1
        elif char == "," and depth == 1:
            args.append("".join(current).strip())
            current = []
            continue
        current.append(char)
    raise ValueError(f"unbalanced parentheses in macro call at {start}: {sql[start:start + 40]!r}")


def format_variable(value: str, fmt: str | None) -> str:
    """A single-valued dashboard variable as Grafana interpolates it. No format: the value
    as is (the ClickHouse plugin's own format() returns a single value unchanged);
    ``percentencode``: RFC 3986 strict (Grafana's encodeURIComponentStrict, which leaves
    only letters, digits and ``-_.~``, everything else as %XX of its UTF-8 bytes)."""
    if fmt in (None, "raw"):
        return value
    if fmt == "percentencode":
        return quote(value, safe="")
    raise ValueError(f"variable format {fmt!r} is not expanded by this module")


_VARIABLE = re.compile(r"\$\{(\w+)(?::(\w+))?\}")


def expand(sql: str, time_from: datetime, time_to: datetime, interval_s: float,
           variables: dict[str, str] | None = None) -> str:
    variables = variables or {}
    sql = _VARIABLE.sub(lambda m: format_variable(variables[m[1]], m[2])
                        if m[1] in variables else m[0], sql)
    for name, value in variables.items():
        sql = re.sub(r"\$" + re.escape(name) + r"\b", lambda _: value, sql)
    start, end = int(time_from.timestamp()), int(time_to.timestamp())
    start_ms, end_ms = int(time_from.timestamp() * 1000), int(time_to.timestamp() * 1000)
    seconds = max(int(interval_s), 1)
    out, pos = [], 0
    for match in _MACRO.finditer(sql):
        if match.start() < pos:
            continue
        name, after = match.group(1), match.end()
        args: list[str] = []
        if after < len(sql) and sql[after] == "(":
            args, after = _args(sql, after)
        out.append(sql[pos:match.start()])
        out.append(_expand_one(name, args, start, end, start_ms, end_ms, seconds, time_from, time_to))
        pos = after
    out.append(sql[pos:])
    return "".join(out)


def _expand_one(name: str, args: list[str], start: int, end: int, start_ms: int, end_ms: int,
                seconds: int, time_from: datetime, time_to: datetime) -> str:
    def one_arg() -> str:
        if len(args) != 1:
            raise ValueError(f"$__{name} expects 1 argument, got {len(args)}")
        return args[0]

    day = lambda t: f"toDate('{t.astimezone(timezone.utc):%Y-%m-%d}')"  # noqa: E731
    if name == "fromTime":
        return f"toDateTime({start})"
    if name == "toTime":
        return f"toDateTime({end})"
    if name == "fromTime_ms":
        return f"fromUnixTimestamp64Milli({start_ms})"
    if name == "toTime_ms":
        return f"fromUnixTimestamp64Milli({end_ms})"
    if name == "timeFilter":
        col = one_arg()
        return f"{col} >= toDateTime({start}) AND {col} <= toDateTime({end})"
    if name == "timeFilter_ms":
        col = one_arg()
        return (f"{col} >= fromUnixTimestamp64Milli({start_ms}) AND "
                f"{col} <= fromUnixTimestamp64Milli({end_ms})")
    if name == "dateFilter":
        col = one_arg()
        return f"{col} >= {day(time_from)} AND {col} <= {day(time_to)}"
    if name in ("dateTimeFilter", "dt"):
        if len(args) != 2:
            raise ValueError(f"$__{name} expects 2 arguments, got {len(args)}")
        return (f"({args[0]} >= {day(time_from)} AND {args[0]} <= {day(time_to)}) AND "
                f"({args[1]} >= toDateTime({start}) AND {args[1]} <= toDateTime({end}))")
    if name == "timeInterval":
        return f"toStartOfInterval(toDateTime({one_arg()}), INTERVAL {seconds} second)"
    if name == "timeInterval_ms":
        return (f"toStartOfInterval(toDateTime64({one_arg()}, 3), "
                f"INTERVAL {seconds * 1000} millisecond)")
    if name == "interval_s":
        return str(seconds)
    raise ValueError(f"unknown macro $__{name}")
