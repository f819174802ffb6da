"""Graceful stop: SIGTERM / SIGINT ask the training loop to checkpoint at the next step boundary and exit.

The handler only records the request (nothing unsafe runs inside a signal handler); the loop polls
:attr:`StopRequest.requested` between steps. After the first signal the default handlers come back,
so a second Ctrl-C (or SIGTERM) ends the process at once if saving hangs.
"""
from __future__ import annotations

import logging
import signal
import threading
from types import FrameType
from typing import Iterable

logger = logging.getLogger(__name__)

#: Exit status after a graceful stop: 0 for SIGTERM (a scheduler's polite request), 130 for SIGINT.
EXIT_STATUS = {"SIGTERM": 0, "SIGINT": 130}


class StopRequest:
    """Records a SIGTERM/SIGINT so the training loop can stop cleanly at a step boundary.

    Use as a context manager (installs the handlers, restores the previous ones on exit), or call
    :meth:`install` / :meth:`restore`. :meth:`request` sets the flag without a signal (tests, hooks).

    Example:
        >>> with StopRequest() as stop:
        ...     for step in steps:
        ...         train(step)
        ...         if stop.requested:
        ...             save_checkpoint(); break
    """

    def __init__(self, signals: Iterable[int] = (signal.SIGTERM, signal.SIGINT)) -> None:
        self.signals = tuple(signals)
        self.signal_name: str | None = None
        self._previous: dict = {}

    @property
    def requested(self) -> bool:
        """True once a stop signal arrived (or :meth:`request` was called)."""
        return self.signal_name is not None

    @property
    def exit_status(self) -> int:
        """Process exit status for the received signal (0 after SIGTERM, 130 after SIGINT)."""
        return EXIT_STATUS.get(self.signal_name or "", 0)

    def request(self, name: str = "SIGTERM") -> None:
        """Ask for a stop as if signal ``name`` had arrived."""
        if self.signal_name is None:
            self.signal_name = name

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        first = self.signal_name is None
        self.request(name)
        for sig in self.signals:  # a second signal acts immediately (default behaviour)
            signal.signal(sig, signal.SIG_DFL if sig != signal.SIGINT else signal.default_int_handler)
        if first:
            logger.warning("received %s: a checkpoint will be saved at the next step boundary, then the run "
                           "stops (send it again to stop immediately)", name)

    def install(self) -> StopRequest:
        """Install the handlers (main thread only; elsewhere this is a no-op with a debug line)."""
        if threading.current_thread() is not threading.main_thread():
            logger.debug("stop signals not handled: not in the main thread")
            return self
        for sig in self.signals:
            self._previous[sig] = signal.getsignal(sig)
            signal.signal(sig, self._handle)
        return self

    def restore(self) -> None:
        """Put back the handlers that were there before :meth:`install`."""
        for sig, previous in self._previous.items():
            signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
        self._previous.clear()

    def __enter__(self) -> StopRequest:
        return self.install()

    def __exit__(self, *exc_info: object) -> None:
        self.restore()
