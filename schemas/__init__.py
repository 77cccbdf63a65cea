"""Record shapes (JSON Schema) and ClickHouse DDL: one source of truth, installed as
``stream_app.schemas``. ``stream_app.records`` loads the JSON Schemas from here."""
