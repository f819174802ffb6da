"""The one exception type for problems a user can fix (bad config, bad data, bad checkpoint).

Entry points catch :class:`DropCovError`, print its message as one line and exit non-zero;
``--debug`` re-raises it with the full traceback.
"""
import argparse


class DropCovError(Exception):
    """A user-facing error whose message names the file, key or value at fault and how to fix it."""


class CommandLineParser(argparse.ArgumentParser):
    """``argparse`` whose usage errors raise :class:`DropCovError`, so a program prints them as its one
    ``PROGRAM: error: ...`` line with exit status 2 instead of argparse's usage block."""

    def error(self, message: str) -> None:  # noqa: D102 - argparse hook
        raise DropCovError(f"command line: {message}")
