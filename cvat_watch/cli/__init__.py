"""The ``cvat-watch`` command: argparse subcommands and their presentation.

A thin adapter: it turns a :class:`~cvat_watch.errors.CvatWatchError` into one line on stderr
and exit code 2, and otherwise calls the library and the daemon. Nothing imports it back.
"""
