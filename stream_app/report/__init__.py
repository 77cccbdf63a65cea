"""``dallosh report``: a self-contained HTML report of one replay (inline CSS, SVG and
a few lines of JS; no network needed to open it)."""

from stream_app.report.data import ReportData, ReportError, load_report_data
from stream_app.report.render import render_report, write_report

__all__ = ["ReportData", "ReportError", "load_report_data", "render_report", "write_report"]
