"""Where the admin commands find the daemon's state: the same database the service uses.

Under systemd the service gets its folder from ``$STATE_DIRECTORY``, which an admin shell does
not have; looking only at the shell's default would open (and create) an empty database in the
admin's home and report "(no deliveries)". So the commands try, in order: ``--state-dir``; the
config file's ``state_dir``; ``$STATE_DIRECTORY``; systemd's default ``/var/lib/cvat-watch``; the
user default (``$XDG_STATE_HOME/cvat-watch/<config>-<hash>``, as ``run`` uses it). An explicit
place (``--state-dir``, or ``state_dir`` in the config) is the only one tried. No database found
is an error naming every place tried; nothing is ever created.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from cvat_watch.config import STATE_FILE_NAME, configured_state_dir, default_state_dir
from cvat_watch.errors import StateError

__all__ = ["SYSTEMD_STATE_DIR", "find_state"]

#: ``StateDirectory=cvat-watch`` in the shipped unit.
SYSTEMD_STATE_DIR = Path("/var/lib/cvat-watch")


def _candidates(
    state_dir: str | None, config: str | None, environ: Mapping[str, str]
) -> tuple[list[Path], bool]:
    """The folders to try, and whether they were named explicitly."""
    if state_dir:
        return [Path(state_dir).expanduser()], True
    if config:
        configured = configured_state_dir(config)
        if configured is not None:
            return [configured], True
    places = []
    systemd = environ.get("STATE_DIRECTORY", "").split(":")[0]
    if systemd:
        places.append(Path(systemd))
    places.append(SYSTEMD_STATE_DIR)
    # The user default: a folder per configuration file when one is named, else the shared one.
    user = {k: v for k, v in environ.items() if k != "STATE_DIRECTORY"}
    places.append(default_state_dir(user, config_file=Path(config) if config else None))
    return list(dict.fromkeys(places)), False


def find_state(
    *, state_dir: str | None = None, config: str | None = None, environ: Mapping[str, str] | None = None
) -> Path:
    """The path of the state database to use; StateError naming the places tried if there is none."""
    env = os.environ if environ is None else environ
    places, explicit = _candidates(state_dir, config, env)
    for place in places:
        database = place / STATE_FILE_NAME
        if database.is_file():
            return database
        if os.path.isdir(place) and not os.access(place, os.R_OK | os.X_OK):
            raise StateError(
                "cannot look into the state folder (permission denied): run this command as the"
                " daemon's user or root, e.g. `sudo cvat-watch …`",
                path=place,
            )
    tried = ", ".join(str(place) for place in places)
    hint = (
        ""
        if explicit
        else f"; pass --state-dir (the systemd unit keeps it in {SYSTEMD_STATE_DIR}, readable by root)"
    )
    raise StateError(f"no cvat-watch state database ({STATE_FILE_NAME}) found in {tried}{hint}")
