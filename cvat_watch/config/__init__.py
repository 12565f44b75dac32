"""The daemon's configuration: one TOML file → a frozen attrs tree.

Reading happens in two steps. First the file is structured, strictly, into private
``_Raw*`` classes that mirror what a person writes (``[[watch]]``, ``[[handler]]`` with a
``type``, ``secret_env``...): unknown keys and wrong types fail there, all at once, with
the key path of each problem. Then the raw tree is resolved into the public classes:
relative paths against the config file's folder, secrets from the environment or from
files, defaults for handler keys, and the rules that span several keys.

Secrets are held in :class:`Secret` and so never appear in ``repr``, in
:func:`cvat_watch.converter.to_dict` output, in log lines or in error messages.
Nothing here starts anything or touches the exported annotation files: a watch may be
configured before its first export exists.
"""

from cvat_watch.config._load import configured_state_dir, load_config
from cvat_watch.config._model import (
    DEFAULT_RETRY_DELAYS,
    STATE_FILE_NAME,
    AppriseHandlerConfig,
    CommandHandlerConfig,
    Config,
    CvatSourceConfig,
    HandlerConfig,
    HttpConfig,
    LogHandlerConfig,
    NatsHandlerConfig,
    WatchConfig,
    WebhookHandlerConfig,
    default_state_dir,
)
from cvat_watch.config._resolve import parse_listen
from cvat_watch.converter import Secret
from cvat_watch.eventtypes import ALL_EVENTS, DEFAULT_EVENTS

__all__ = [
    "ALL_EVENTS",
    "DEFAULT_EVENTS",
    "DEFAULT_RETRY_DELAYS",
    "STATE_FILE_NAME",
    "AppriseHandlerConfig",
    "CommandHandlerConfig",
    "Config",
    "CvatSourceConfig",
    "HandlerConfig",
    "HttpConfig",
    "LogHandlerConfig",
    "NatsHandlerConfig",
    "Secret",
    "WatchConfig",
    "WebhookHandlerConfig",
    "configured_state_dir",
    "default_state_dir",
    "load_config",
    "parse_listen",
]
