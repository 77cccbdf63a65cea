"""A grafana-clickhouse-datasource query for grafana-foundation-sdk, which ships no
types for that plugin: a ``Dataquery`` model plus its builder, serialised the way the
plugin's SQL editor saves a query (``editorType: sql``, ``rawSql``, ``queryType``)."""

from __future__ import annotations

from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.models import dashboard

CLICKHOUSE_UID = "dallosh-clickhouse"
PROMETHEUS_UID = "dallosh-prometheus"
CLICKHOUSE = dashboard.DataSourceRef(type_val="grafana-clickhouse-datasource", uid=CLICKHOUSE_UID)
PROMETHEUS = dashboard.DataSourceRef(type_val="prometheus", uid=PROMETHEUS_UID)

# The plugin's backend result formats (sqlutil.FormatQueryOption).
FORMAT_TIME_SERIES, FORMAT_TABLE = 0, 1


class ClickHouseSQL(cogvariants.Dataquery):
    def __init__(self, ref_id: str, raw_sql: str, time_series: bool) -> None:
        self.ref_id, self.raw_sql, self.time_series = ref_id, raw_sql, time_series

    def to_json(self) -> dict[str, object]:
        return {
            "datasource": CLICKHOUSE,
            "editorType": "sql",
            "format": FORMAT_TIME_SERIES if self.time_series else FORMAT_TABLE,
            "queryType": "timeseries" if self.time_series else "table",
            "rawSql": self.raw_sql,
            "refId": self.ref_id,
        }


class ClickHouseQuery(cogbuilder.Builder[ClickHouseSQL]):
    def __init__(self, raw_sql: str, *, time_series: bool, ref_id: str = "A") -> None:
        self._internal = ClickHouseSQL(ref_id, raw_sql, time_series)

    def build(self) -> ClickHouseSQL:
        return self._internal
