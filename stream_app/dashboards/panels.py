"""Small panel factories over grafana-foundation-sdk builders, so each dashboard module
reads as a list of panels: title, query, unit, size."""

from __future__ import annotations

from grafana_foundation_sdk.builders import bargauge, common as common_b, dashboard as dash_b
from grafana_foundation_sdk.builders import geomap, prometheus, stat, table, timeseries
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.models import common, dashboard

from stream_app.dashboards.clickhouse_query import CLICKHOUSE, PROMETHEUS, ClickHouseQuery
from stream_app.dashboards.queries import PanelSQL


def thresholds(*steps: tuple[float | None, str]) -> dash_b.ThresholdsConfig:
    return dash_b.ThresholdsConfig().mode(dashboard.ThresholdsMode.ABSOLUTE).steps(
        [dashboard.Threshold(value=value, color=color) for value, color in steps])


def _sql(query: PanelSQL) -> ClickHouseQuery:
    return ClickHouseQuery(query.sql, time_series=query.time_series)


def sql_timeseries(title: str, query: PanelSQL, *, unit: str = "short", height: int = 8,
                   width: int = 12, description: str = "",
                   threshold_line: float | None = None, bars: bool = False) -> timeseries.Panel:
    panel = (timeseries.Panel().title(title).description(description).datasource(CLICKHOUSE)
             .with_target(_sql(query)).unit(unit).height(height).span(width)
             .fill_opacity(20).line_width(2))
    if bars:
        panel = panel.draw_style(common.GraphDrawStyle.BARS).fill_opacity(80)
    if threshold_line is not None:
        panel = (panel.thresholds(thresholds((None, "green"), (threshold_line, "red")))
                 .thresholds_style(common_b.GraphThresholdsStyleConfig()
                                   .mode(common.GraphThresholdsStyleMode.DASHED)))
    return panel


def sql_stat(title: str, query: PanelSQL, *, unit: str = "short", height: int = 4,
             width: int = 6, description: str = "",
             steps: tuple[tuple[float | None, str], ...] = ((None, "blue"),)) -> stat.Panel:
    return (stat.Panel().title(title).description(description).datasource(CLICKHOUSE)
            .with_target(_sql(query)).unit(unit).height(height).span(width)
            .thresholds(thresholds(*steps)).color_mode(common.BigValueColorMode.BACKGROUND)
            .graph_mode(common.BigValueGraphMode.NONE))


def sql_table(title: str, query: PanelSQL, *, height: int = 8, width: int = 12,
              description: str = "") -> table.Panel:
    return (table.Panel().title(title).description(description).datasource(CLICKHOUSE)
            .with_target(_sql(query)).height(height).span(width))


def sql_bars(title: str, query: PanelSQL, *, height: int = 8, width: int = 12,
             description: str = "") -> bargauge.Panel:
    """One bar per row (e.g. per topic): all values, not a reduction of the series."""
    return (bargauge.Panel().title(title).description(description).datasource(CLICKHOUSE)
            .with_target(_sql(query)).height(height).span(width)
            .orientation(common.VizOrientation.HORIZONTAL)
            .display_mode(common.BarGaugeDisplayMode.GRADIENT)
            .reduce_options(common_b.ReduceDataOptions().values(True).calcs([]).limit(20)))


def sql_geomap(title: str, query: PanelSQL, *, color_field: str, size_field: str,
               label_field: str, steps: tuple[tuple[float | None, str], ...],
               center: tuple[float, float], zoom: int, height: int = 10, width: int = 12,
               description: str = "") -> geomap.Panel:
    """A map of one marker per row, at its ``latitude``/``longitude`` columns: sized by
    ``size_field``, coloured by ``color_field`` through the threshold ``steps``, labelled
    by ``label_field``; the other columns in the tooltip."""
    markers = (common_b.MapLayerOptions().type("markers").name("markers").tooltip(True)
               .location(common_b.FrameGeometrySource().mode(common.FrameGeometrySourceMode.COORDS)
                         .latitude("latitude").longitude("longitude"))
               .config({"showLegend": True, "style": {
                   "color": {"field": color_field, "fixed": "green"},
                   "size": {"field": size_field, "fixed": 5, "min": 4, "max": 30},
                   "opacity": 0.6,
                   "symbol": {"mode": "fixed", "fixed": "img/icons/marker/circle.svg"},
                   "text": {"mode": "field", "field": label_field, "fixed": ""},
                   "textConfig": {"fontSize": 10, "offsetY": -14, "textAlign": "center",
                                  "textBaseline": "bottom"}}}))
    return (geomap.Panel().title(title).description(description).datasource(CLICKHOUSE)
            .with_target(_sql(query)).height(height).span(width)
            .view(geomap.MapViewConfig().id("coords").lat(center[0]).lon(center[1]).zoom(zoom))
            .basemap(common_b.MapLayerOptions().type("default").name("basemap"))
            .layers([markers])
            .tooltip(geomap.TooltipOptions().mode(geomap.geomap.TooltipMode.DETAILS))
            .thresholds(thresholds(*steps))
            .color_scheme(dash_b.FieldColor().mode(dashboard.FieldColorModeId.THRESHOLDS)))


def promql(expr: str, legend: str, ref_id: str = "A") -> prometheus.Dataquery:
    return (prometheus.Dataquery().expr(expr).legend_format(legend).ref_id(ref_id)
            .datasource(PROMETHEUS).range())


def prom_timeseries(title: str, targets: list[prometheus.Dataquery], *, unit: str = "short",
                    height: int = 8, width: int = 12, description: str = "",
                    threshold_line: float | None = None) -> timeseries.Panel:
    panel = (timeseries.Panel().title(title).description(description).datasource(PROMETHEUS)
             .targets(list[cogbuilder.Builder](targets)).unit(unit).height(height).span(width)
             .fill_opacity(10).line_width(2))
    if threshold_line is not None:
        panel = (panel.thresholds(thresholds((None, "green"), (threshold_line, "red")))
                 .thresholds_style(common_b.GraphThresholdsStyleConfig()
                                   .mode(common.GraphThresholdsStyleMode.DASHED)))
    return panel
