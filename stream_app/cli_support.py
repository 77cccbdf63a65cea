"""What every ``dallosh`` command shares: settings, logging, and turning user mistakes
into one clear error line instead of a traceback."""

from __future__ import annotations

import functools
import logging
import sys
from typing import Any, Callable

import click

from connectors.csv_formats import FormatError
from connectors.csv_replay import ReplayError
from connectors.live.stream import LiveError
from stream_app.infra.kafka_broker import InfraError
from stream_app.kafka_admin import KafkaUnavailable
from stream_app.settings import Settings, SettingsError, load_settings
from stream_app.storage.clickhouse import StorageError

USER_ERRORS = (InfraError, StorageError, SettingsError, KafkaUnavailable, ReplayError, FormatError,
               LiveError)


def current_settings() -> Settings:
    return load_settings()


def friendly_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except USER_ERRORS as exc:
            click.secho(f"error: {exc}", fg="red", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
    return wrapper


def setup_logging(settings: Settings) -> None:
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
