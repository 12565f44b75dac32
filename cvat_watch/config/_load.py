"""Reading a configuration file: TOML, strict structuring, resolution."""

from __future__ import annotations

import logging
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cattrs.errors import CattrsError

from cvat_watch.config._model import Config
from cvat_watch.config._raw import _RawFile
from cvat_watch.config._resolve import _Resolver
from cvat_watch.converter import converter, error_paths
from cvat_watch.errors import ConfigError

logger = logging.getLogger("cvat_watch.config")  # the package's name: log lines keep the name they had


# --- loading -----------------------------------------------------------------------------


def load_config(path: str | os.PathLike[str], *, environ: Mapping[str, str] | None = None) -> Config:
    """Read, validate and resolve a configuration file.

    ``environ`` (default ``os.environ``) is where ``secret_env``/``urls_env`` are looked
    up and where the default state directory comes from. Raises :class:`ConfigError`
    naming the file and the key; warnings are returned in ``Config.warnings`` and logged.
    """
    file = Path(os.path.abspath(os.fspath(path)))
    data = _read_toml(file)
    raw = _structure(file, data)
    resolver = _Resolver(file=file, environ=os.environ if environ is None else environ)
    config = resolver.config(raw)
    for warning in config.warnings:
        logger.warning("%s", warning)
    return config


def configured_state_dir(path: str | os.PathLike[str]) -> Path | None:
    """The ``state_dir`` a configuration file sets (absolute), or None when it leaves it out.

    Reads nothing else: the admin commands that only need the state must work without the
    handlers' secrets, which an admin shell usually does not have.
    """
    file = Path(os.path.abspath(os.fspath(path)))
    value = _read_toml(file).get("state_dir")
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ConfigError("must be a non-empty string", path=file, key="state_dir")
    state_dir = Path(value).expanduser()
    return state_dir if state_dir.is_absolute() else file.parent / state_dir


def _read_toml(file: Path) -> dict[str, Any]:
    try:
        with file.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError("config file not found", path=file) from None
    except IsADirectoryError:
        raise ConfigError("is a directory, not a config file", path=file) from None
    except OSError as exc:
        raise ConfigError(f"cannot read the config file: {exc.strerror}", path=file) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 text (byte {exc.start})", path=file) from None
    except tomllib.TOMLDecodeError as exc:
        detail = str(exc)
        found = re.search(r"\s*\(at line (\d+), column (\d+)\)$", detail)
        if found:
            where = f" at line {found[1]}, column {found[2]}"
            detail = detail[: found.start()]
        else:
            where = " at the end of the file" if "end of document" in detail else ""
            detail = re.sub(r"\s*\(at end of document\)$", "", detail)
        raise ConfigError(f"invalid TOML{where}: {detail}", path=file) from None


def _structure(file: Path, data: dict[str, Any]) -> _RawFile:
    try:
        return converter.structure(data, _RawFile)
    except (CattrsError, TypeError, ValueError, KeyError) as exc:
        problems = error_paths(exc)
    if not problems:  # pragma: no cover - error_paths always yields at least one
        problems = [("", "invalid configuration")]
    # A misspelt key also makes the real one "missing": name the cause first.
    problems.sort(key=lambda problem: not problem[1].startswith("unknown key"))
    for index, (key, message) in enumerate(problems):
        if key in ("watch", "handler") and message.startswith("expected a list"):
            problems[index] = (key, f"{message}: write [[{key}]] (an array of tables)")
    (key, message), rest = problems[0], problems[1:]
    if rest:
        shown = "; ".join(f"{k or 'top level'}: {m}" for k, m in rest[:4])
        more = f" (and {len(rest) - 4} more)" if len(rest) > 4 else ""
        message = f"{message}; also {shown}{more}"
    raise ConfigError(message, path=file, key=key or None)
