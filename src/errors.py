"""The one exception type for problems a user can fix (bad config, bad data, bad checkpoint).

Entry points catch :class:`DropCovError`, print its message as one line and exit non-zero;
``--debug`` re-raises it with the full traceback.
"""


class DropCovError(Exception):
    """A user-facing error whose message names the file, key or value at fault and how to fix it."""
