"""What every ``dallosh`` command shares: settings, logging, and turning user mistakes
into one clear error line instead of a traceback."""

from __future__ import annotations

import functools
import logging
import os
import sys
from typing import Any, Callable

import click

from connectors.csv_formats import FormatError
from connectors.csv_replay import ReplayError
from connectors.live.stream import LiveError
from stream_app.classify.provider_config import ProviderConfigError, load_providers
from stream_app.clean.relevance import load_brand
from stream_app.infra.kafka_broker import InfraError
from stream_app.kafka_admin import KafkaUnavailable
from stream_app.settings import (Settings, SettingsError, load_settings,
                                 unknown_variable_warnings)
from stream_app.storage.clickhouse import StorageError

USER_ERRORS = (InfraError, StorageError, SettingsError, KafkaUnavailable, ReplayError, FormatError,
               LiveError)


def current_settings() -> Settings:
    """The settings of this command, every one validated before the command starts
    anything (a broker, a replay, a worker), so a bad value is one error line at once.

    Also checked here: the brand and providers files the settings point at (a worker would
    otherwise fail on them only once started), and ``DALLOSH_*`` variables that nothing
    reads, most often a typo, which get a warning on stderr rather than silence.
    """
    provider_vars: set[str] | None = None
    try:
        settings = load_settings()
        load_brand(settings)
        provider_vars = _provider_variables(settings)
        return settings
    finally:
        if provider_vars is None:  # settings refused: still point out a misspelt variable
            provider_vars = _provider_variables(None)
        for line in unknown_variable_warnings(os.environ, also_known=provider_vars):
            click.secho(line, fg="yellow", err=True)


def _provider_variables(settings: Settings | None) -> set[str]:
    """The variables the providers in use read (``DALLOSH_OLLAMA_URL``, key variables).
    With ``settings``, the providers file is validated too (SettingsError naming it)."""
    if settings is None:  # the packaged list; its names do not depend on the environment
        providers = load_providers(None, environ={})
    else:
        try:
            providers = load_providers(settings.providers)
        except ProviderConfigError as exc:
            raise SettingsError(f"DALLOSH_PROVIDERS: {exc}" if settings.providers
                                else str(exc)) from None
    return {name for p in providers for name in (p.base_url_env, p.key_env) if name}


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
