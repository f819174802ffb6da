"""Stop requests: SIGTERM, SIGINT (Ctrl-C), SIGHUP and SIGUSR1 reach one watcher thread, never MindSpore's handlers.

SIGHUP (the terminal or SSH session of a run closed) asks for the same checkpoint and stop as SIGTERM.
SIGUSR1 is the stop request of a job launched by ``mpirun``: OpenMPI forwards it to every rank and, unlike
SIGTERM or SIGINT, kills no rank a second later, so rank 0 has the time to write its checkpoint (the launch
script turns its own SIGTERM/Ctrl-C into SIGUSR1; ``kill -USR1`` and Slurm's ``--signal=USR1@120`` send it).

MindSpore 2.10 re-registers its own SIGINT handler at every graph run (``GraphScheduler::Run``), and that
handler sends the process SIGTERM: Ctrl-C during training would look like a scheduler's SIGTERM. So
:class:`StopRequest` blocks both signals in the thread that installs it, before MindSpore starts any
thread (threads inherit the mask), and a watcher thread takes them with ``sigtimedwait``, which names
the signal that really arrived. The first one

- during a graceful section (:attr:`StopRequest.graceful`, the training loop) is only recorded: the loop
  checkpoints at the next step boundary and stops;
- elsewhere interrupts the main thread (``KeyboardInterrupt``), as Python's own Ctrl-C does.

A section that runs MindSpore graphs outside training (evaluation, prediction, export) is made graceful
with :meth:`StopRequest.deferred`: a signal is raised as ``KeyboardInterrupt`` at its next check (after a
batch) instead of inside a graph compilation, which MindSpore would answer with a dump of the failed graph.
A second signal stops the process at once (exit status 128 + the signal's number), removing the partial
files registered with :func:`removed_if_forced_out`; the same signal again within :data:`REPEAT_SECONDS` is the
same request (``scancel --batch --signal=USR1`` reaches a Slurm job's batch script and its ``srun``, and both pass
it on to the ranks). Python-level handlers that only record the request are
installed too, for threads that existed before (in-process use).
"""
from __future__ import annotations

import _thread
import contextlib
import logging
import os
import signal
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Callable, Iterable, Iterator

logger = logging.getLogger(__name__)

#: Exit status after a graceful stop: 0 for SIGTERM (a scheduler's polite request) and SIGUSR1 (a launcher's),
#: 130 for SIGINT, 129 for SIGHUP.
EXIT_STATUS = {"SIGTERM": 0, "SIGUSR1": 0, "SIGINT": 130, "SIGHUP": 129}
#: The signals that ask for a stop.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1)
#: The same signal again within this many seconds of the first is a copy of it (delivered by a scheduler and
#: forwarded by a launcher), not a second request.
REPEAT_SECONDS = 1.0
_POLL_SECONDS = 0.2
_ACTIVE: list = []  # the installed StopRequest of this process, if any
_PARTIAL_FILES: set = set()  # files being written: removed when a second signal ends the process at once


def active_stop_request() -> StopRequest | None:
    """The :class:`StopRequest` installed in this process (by :func:`src.cli.run_entry_point`), if any."""
    return _ACTIVE[-1] if _ACTIVE else None


@contextlib.contextmanager
def removed_if_forced_out(path: Path) -> Iterator[None]:
    """While the block writes ``path`` (a temporary file), a second stop signal removes it before the process
    ends at once; the writer itself removes it on any other failure."""
    _PARTIAL_FILES.add(Path(path))
    try:
        yield
    finally:
        _PARTIAL_FILES.discard(Path(path))


@contextlib.contextmanager
def deferred_stop() -> Iterator[Callable[[], None]]:
    """The installed request's :meth:`StopRequest.deferred` block, yielding its check to call between batches
    (a check that does nothing when no request is installed, as in a test calling the engine directly)."""
    stop = active_stop_request()
    if stop is None:
        yield lambda: None
        return
    with stop.deferred():
        yield stop.raise_if_requested


def _unblock_in_child() -> None:
    """A forked child (a data-loading worker) must die by the stop signals as usual."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


os.register_at_fork(after_in_child=_unblock_in_child)


class StopRequest:
    """Records a stop signal (:data:`STOP_SIGNALS`) so the training loop can stop cleanly at a step boundary.

    Use as a context manager (installs the watcher, restores the signal mask and handlers on exit), or
    call :meth:`install` / :meth:`restore`. :meth:`request` sets the flag without a signal (tests, hooks).

    Example:
        >>> with StopRequest() as stop:
        ...     stop.graceful = True
        ...     for step in steps:
        ...         train(step)
        ...         if stop.requested:
        ...             save_checkpoint(); break
    """

    def __init__(self, signals: Iterable[int] = STOP_SIGNALS, graceful: bool = True,
                 program: str = "") -> None:
        self.signals = tuple(signals)
        self.signal_name: str | None = None
        self._received_at = 0.0
        self.graceful = graceful
        self.program = program
        self._previous_handlers: dict = {}
        self._previous_mask: set | None = None
        self._closing = threading.Event()
        self._watcher: threading.Thread | None = None
        self._interrupting = False  # interrupt_main() runs the Python-level SIGINT handler: not a second signal

    @property
    def requested(self) -> bool:
        """True once a stop signal arrived (or :meth:`request` was called). Takes a signal that is already
        pending, so a request is seen at once, not only when the watcher wakes."""
        if self.signal_name is None and self._watcher is not None:
            info = signal.sigtimedwait(self.signals, 0)
            if info is not None:
                self._received(info.si_signo)
        return self.signal_name is not None

    @property
    def exit_status(self) -> int:
        """Process exit status for the received signal (:data:`EXIT_STATUS`)."""
        return EXIT_STATUS.get(self.signal_name or "", 0)

    def request(self, name: str = "SIGTERM") -> None:
        """Ask for a stop as if signal ``name`` had arrived."""
        if self.signal_name is None:
            self.signal_name = name

    def _received(self, signum: int, in_main_thread: bool = False) -> None:
        name = signal.Signals(signum).name
        if name == self.signal_name and time.monotonic() - self._received_at < REPEAT_SECONDS:
            logger.debug("%s again within %.0f s: the same stop request", name, REPEAT_SECONDS)
            return
        if self.signal_name is not None:
            for partial in list(_PARTIAL_FILES):
                partial.unlink(missing_ok=True)
            prefix = f"{self.program}: " if self.program else ""
            os.write(2, f"{prefix}received {name} again: stopping at once\n".encode())
            os._exit(128 + signum)
        self.request(name)
        self._received_at = time.monotonic()
        if self.graceful:
            logger.warning("received %s: a checkpoint will be saved at the next step boundary, then the run "
                           "stops (send it again, a second or more later, to stop immediately)", name)
        elif in_main_thread:
            raise KeyboardInterrupt
        else:
            self._interrupting = True
            _thread.interrupt_main()

    @contextlib.contextmanager
    def deferred(self) -> Iterator[StopRequest]:
        """Inside the block a signal is only recorded; it is raised as ``KeyboardInterrupt`` by
        :meth:`raise_if_requested` (call it between batches) or when the block ends."""
        graceful_before = self.graceful
        self.graceful = True
        try:
            yield self
        finally:
            self.graceful = graceful_before
        if not graceful_before:
            self.raise_if_requested()

    def raise_if_requested(self) -> None:
        """Raise ``KeyboardInterrupt`` when a stop signal has arrived (a check point of a deferred block)."""
        if self.requested:
            raise KeyboardInterrupt

    def _watch(self) -> None:
        while not self._closing.is_set():
            info = signal.sigtimedwait(self.signals, _POLL_SECONDS)
            if info is not None:
                self._received(info.si_signo)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        """Python-level handler, for a signal delivered to a thread that existed before :meth:`install` (and
        for :func:`_thread.interrupt_main`'s simulated SIGINT, which raises the interrupt in the main thread)."""
        if self._interrupting and signum == signal.SIGINT:
            self._interrupting = False
            raise KeyboardInterrupt
        self._received(signum, in_main_thread=True)

    def install(self) -> StopRequest:
        """Block the signals in this thread and start the watcher (main thread only; elsewhere a no-op)."""
        if threading.current_thread() is not threading.main_thread():
            logger.debug("stop signals not handled: not in the main thread")
            return self
        for sig in self.signals:
            self._previous_handlers[sig] = signal.getsignal(sig)
            signal.signal(sig, self._handle)
        self._previous_mask = signal.pthread_sigmask(signal.SIG_BLOCK, self.signals)
        self._closing.clear()
        self._watcher = threading.Thread(target=self._watch, name="stop-signals", daemon=True)
        self._watcher.start()
        _ACTIVE.append(self)
        return self

    def restore(self, ignore_later_signals: bool = False) -> None:
        """Stop the watcher, put back the signal mask and the handlers that were there before; with
        ``ignore_later_signals`` (a program whose work is done) the signals are ignored instead, so one that
        arrives while the process exits cannot kill it."""
        if self._watcher is None:
            return
        self._closing.set()
        self._watcher.join()
        self._watcher = None
        if self in _ACTIVE:
            _ACTIVE.remove(self)
        if ignore_later_signals:
            for sig in self.signals:
                signal.signal(sig, signal.SIG_IGN)  # pending ones are discarded when unblocked below
        if self._previous_mask is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, self._previous_mask)
        if not ignore_later_signals:
            for sig, previous in self._previous_handlers.items():
                signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
        self._previous_handlers.clear()

    def __enter__(self) -> StopRequest:
        return self.install()

    def __exit__(self, *exc_info: object) -> None:
        self.restore()
