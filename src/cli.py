"""What every command-line program shares: one line on stderr and exit status 2 for a problem the user can fix.

Library code raises :class:`src.errors.DropCovError` with a message about the value at fault; here the
message gets the command-line hint that only this layer knows (which shipped config builds the network
a checkpoint holds), and ``--debug`` shows the traceback instead. SIGINT (Ctrl-C) and SIGTERM are taken by
a :class:`src.runtime.signals.StopRequest` installed before anything else runs: outside the training
loop's graceful stop they end the program with one line and status 130 (SIGINT) or 143 (SIGTERM).
"""
from __future__ import annotations

import signal
import sys
from typing import Callable, Sequence

from src.errors import DropCovError

EXIT_USER_ERROR = 2


def error_line(error: DropCovError) -> str:
    """The one line printed for ``error``: its message, with the shipped config that fits a mismatched
    checkpoint (``CheckpointMismatch.fits``) named after the suggested options."""
    message = " ".join(str(error).split("\n"))
    fits = getattr(error, "fits", None)
    if fits:
        from src.config import find_config_file

        config_file = find_config_file(fits)
        marker = ". Differences: "
        if config_file and marker in message:
            head, tail = message.split(marker, 1)
            message = f"{head} ({config_file}){marker}{tail}"
    return message


def run_entry_point(main: Callable[[Sequence[str]], int | None], argv: Sequence[str] | None = None,
                    program: str = "") -> int:
    """Call ``main(argv)``; print ``program: error: message`` for a DropCovError and return 2.

    ``--debug`` in argv re-raises with the full traceback. An interrupt exits with 128 + the signal's number.
    """
    from src.runtime.log import stderr_line
    from src.runtime.signals import StopRequest

    debug = "--debug" in (sys.argv[1:] if argv is None else argv)
    name = program or (sys.argv[0].rsplit("/", 1)[-1] if sys.argv else "dropcov")
    script = argv is None  # a program's own process (not an in-process call)
    argv = list(sys.argv[1:] if argv is None else argv)
    stop = StopRequest(graceful=False, program=name)
    stop.install()
    done = False
    try:
        code = main(argv)
        done = True
    except DropCovError as err:
        if debug:
            raise
        stderr_line(f"{name}: error: {error_line(err)}")
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        if debug:
            raise
        signal_name = stop.signal_name or "SIGINT"
        stderr_line(f"{name}: interrupted by {signal_name}; nothing was saved")
        return 128 + int(signal.Signals[signal_name])
    finally:
        stop.restore(ignore_later_signals=script and done)  # the work is done: a late signal must not kill it
    return int(code or 0)
