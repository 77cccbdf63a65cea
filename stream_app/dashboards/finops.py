"""FinOps: what the classifier costs, from the provider-call ledger in ClickHouse."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as dash_b

from stream_app.dashboards import queries as q
from grafana_foundation_sdk.models.dashboard import DynamicConfigValue

from stream_app.dashboards.panels import sql_stat, sql_table, sql_timeseries, thresholds

UID = "dallosh-finops"
DEFAULT_DAILY_BUDGET_USD = "20"


def build() -> dash_b.Dashboard:
    return (
        dash_b.Dashboard("Dallosh — FinOps").uid(UID)
        .description("Classifier spend per provider, tokens, cost per 1,000 tweets and the "
                     "day's budget burn (set the budget to DALLOSH_MAX_COST_PER_DAY).")
        .tags(["dallosh", "finops"]).timezone("browser").refresh("1m").time("now-7d", "now")
        .readonly()
        .with_variable(dash_b.TextBoxVariable("daily_budget_usd").label("Daily budget (USD)")
                       .default_value(DEFAULT_DAILY_BUDGET_USD))
        .with_panel(sql_stat(
            "Spent today and budget burn", q.BUDGET_BURN, unit="currencyUSD", width=12,
            description="Spend of the day the time range ends in, and its share of the "
                        "daily budget.", steps=((None, "green"),))
            .override_by_name("budget_burn", [
                DynamicConfigValue("unit", "percentunit"),
                DynamicConfigValue("thresholds", thresholds((None, "green"), (0.8, "orange"),
                                                            (1.0, "red")).build())]))
        .with_panel(sql_table("Cost per 1,000 tweets", q.COST_PER_1K_TWEETS, height=4, width=12))
        .with_panel(sql_timeseries("Cost per hour by provider", q.COST_PER_HOUR,
                                   unit="currencyUSD", bars=True))
        .with_panel(sql_timeseries("Tokens billed", q.TOKENS, width=12))
        .with_panel(sql_table("Cost per day by provider", q.COST_PER_DAY, width=24))
    )
