"""Stop requests: deferred stops in evaluation-like work, a second signal, and signals after the work is done."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from src.runtime.signals import StopRequest, active_stop_request, deferred_stop

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _wait_for(condition, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


def test_a_deferred_block_raises_the_signal_at_its_next_check():
    """Evaluation runs non-graceful (Ctrl-C interrupts), but inside ``deferred`` a signal waits for a check."""
    with StopRequest(graceful=False) as stop:
        assert active_stop_request() is stop
        raised_at = None
        try:
            with deferred_stop() as check:
                check()  # nothing arrived: no effect
                os.kill(os.getpid(), signal.SIGINT)
                assert _wait_for(lambda: stop.requested)
                raised_at = "before the check"
                check()
                raised_at = "after the check"
        except KeyboardInterrupt:
            pass
        assert raised_at == "before the check" and stop.signal_name == "SIGINT" and stop.exit_status == 130
        assert stop.graceful is False


def test_a_deferred_block_without_a_check_raises_when_it_ends():
    with StopRequest(graceful=False) as stop:
        ended = False
        try:
            with stop.deferred():
                os.kill(os.getpid(), signal.SIGTERM)
                assert _wait_for(lambda: stop.requested)
                ended = True
        except KeyboardInterrupt:
            assert ended
        else:
            pytest.fail("the deferred signal was not raised")


def test_without_a_stop_request_the_check_does_nothing():
    assert active_stop_request() is None
    with deferred_stop() as check:
        check()


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=60)


def test_a_second_signal_stops_at_once_and_removes_the_partial_file(tmp_path):
    partial = tmp_path / ".model.partial.ckpt"
    result = _run(f"""
        import os, signal, time
        from pathlib import Path
        from src.runtime.signals import StopRequest, removed_if_forced_out
        partial = Path({str(partial)!r})
        with StopRequest(program="export.py") as stop, removed_if_forced_out(partial):
            partial.write_bytes(b"half")
            os.kill(os.getpid(), signal.SIGTERM)
            while not stop.requested:
                time.sleep(0.01)
            time.sleep(1.2)  # past REPEAT_SECONDS: a second request, not a copy of the first
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(30)
        print("not reached")
    """)
    assert result.returncode == 128 + signal.SIGTERM, result.stderr
    assert result.stderr.strip().splitlines()[-1] == "export.py: received SIGTERM again: stopping at once"
    assert "not reached" not in result.stdout and not partial.exists()


def test_a_copy_of_the_signal_within_a_second_is_the_same_request():
    """scancel --batch --signal=USR1 reaches the batch script and srun, and both pass it on: the two copies are one
    request; SIGUSR1 (the stop that mpirun forwards) is a graceful stop with exit status 0."""
    result = _run("""
        import os, signal, time
        from src.runtime.signals import StopRequest
        with StopRequest(program="train.py") as stop:
            os.kill(os.getpid(), signal.SIGUSR1)
            while not stop.requested:
                time.sleep(0.01)
            os.kill(os.getpid(), signal.SIGUSR1)
            time.sleep(0.5)
            print(stop.signal_name, stop.exit_status, stop.requested)
    """)
    assert result.returncode == 0 and result.stdout == "SIGUSR1 0 True\n", result.stderr
    assert "stopping at once" not in result.stderr


def test_after_the_work_is_done_a_late_signal_cannot_kill_the_process():
    """``restore(ignore_later_signals=True)``: a signal arriving while a finished program exits is ignored."""
    result = _run("""
        import os, signal
        from src.runtime.signals import StopRequest
        stop = StopRequest().install()
        stop.restore(ignore_later_signals=True)
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGINT)
        print("finished")
    """)
    assert result.returncode == 0 and result.stdout == "finished\n", result.stderr
