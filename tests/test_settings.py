from pathlib import Path

import pytest

from stream_app.settings import SETTINGS, SettingsError, load_settings, settings_table_markdown

README = Path(__file__).resolve().parents[1] / "README.md"


def test_defaults_use_local_broker_and_embedded_clickhouse(tmp_path):
    settings = load_settings(environ={"DALLOSH_DATA_DIR": str(tmp_path)})
    assert settings.uses_local_broker
    assert settings.bootstrap_servers == "127.0.0.1:19092"
    assert settings.clickhouse_dsn == f"chdb://{tmp_path / 'clickhouse'}"
    assert settings.topic_raw == "tweets.raw"


def test_environment_overrides_and_parses_types(tmp_path):
    settings = load_settings(environ={"DALLOSH_DATA_DIR": str(tmp_path), "DALLOSH_PARTITIONS": "8",
                                      "DALLOSH_KAFKA_BOOTSTRAP": "k1:9092,k2:9092",
                                      "DALLOSH_SINK_MAX_WAIT": "0.25"})
    assert settings.partitions == 8
    assert settings.sink_max_wait == 0.25
    assert not settings.uses_local_broker
    assert settings.bootstrap_servers == "k1:9092,k2:9092"


@pytest.mark.parametrize("var, value", [("DALLOSH_PARTITIONS", "zero"), ("DALLOSH_PARTITIONS", "0"),
                                        ("DALLOSH_KAFKA_PORT", "70000"),
                                        ("DALLOSH_SINK_MAX_WAIT", "-1")])
def test_bad_values_name_the_variable(var, value):
    with pytest.raises(SettingsError, match=var):
        load_settings(environ={var: value})


def test_config_file_is_read_and_environment_wins(tmp_path):
    config = tmp_path / "dallosh.yaml"
    config.write_text("partitions: 6\napp_id: from-file\n")
    settings = load_settings(environ={"DALLOSH_CONFIG": str(config), "DALLOSH_APP_ID": "from-env"})
    assert settings.partitions == 6
    assert settings.app_id == "from-env"


def test_config_file_with_unknown_key_is_a_clear_error(tmp_path):
    config = tmp_path / "dallosh.yaml"
    config.write_text("partitons: 6\n")
    with pytest.raises(SettingsError, match="unknown setting.*partitons"):
        load_settings(environ={"DALLOSH_CONFIG": str(config)})


def test_as_env_round_trips(tmp_path):
    settings = load_settings(environ={"DALLOSH_DATA_DIR": str(tmp_path), "DALLOSH_PARTITIONS": "3"})
    assert load_settings(environ=settings.as_env()) == settings


def test_readme_documents_every_setting():
    readme = README.read_text(encoding="utf-8")
    assert settings_table_markdown() in readme, \
        "README configuration table is stale: paste settings_table_markdown() output"
    for spec in SETTINGS:
        assert spec.env_var in readme


def test_a_renamed_setting_still_set_is_a_clear_error_not_silently_ignored():
    with pytest.raises(SettingsError, match="DALLOSH_SIGNALS_TREND_Z was replaced by "
                                            "DALLOSH_SIGNALS_TREND_THRESHOLD"):
        load_settings(environ={"DALLOSH_SIGNALS_TREND_Z": "3"})
