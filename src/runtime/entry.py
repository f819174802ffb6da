"""Entry-point wrapper: user errors become one line on stderr and a non-zero exit."""
from __future__ import annotations

import sys
from typing import Callable, Sequence

from src.errors import DropCovError

EXIT_USER_ERROR = 2


def run_entry_point(main: Callable[[Sequence[str]], int | None], argv: Sequence[str] | None = None,
                    program: str = "") -> int:
    """Call ``main(argv)``; print ``program: error: message`` for a DropCovError and return 2.

    ``--debug`` in argv re-raises with the full traceback. KeyboardInterrupt exits with 130.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    name = program or (sys.argv[0].rsplit("/", 1)[-1] if sys.argv else "dropcov")
    try:
        code = main(argv)
    except DropCovError as err:
        if debug:
            raise
        message = " ".join(str(err).split("\n"))
        print(f"{name}: error: {message}", file=sys.stderr, flush=True)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"{name}: interrupted", file=sys.stderr, flush=True)
        return 130
    return int(code or 0)
