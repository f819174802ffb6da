"""Shared helpers for the subprocess tests of train.py (not a test module itself)."""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
CLASSES = ("cat", "dog", "fox")


def make_image_folder(root: Path, train_per_class: int = 6, val_per_class: int = 2, size: int = 40) -> Path:
    """An ImageNet-layout folder (``train/<class>/*.jpg``, ``val/<class>/*.jpg``) of small JPEGs whose
    colour depends on the class, so a few steps can learn something."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count in (("train", train_per_class), ("val", val_per_class)):
        for index, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                pixels = rng.integers(0, 60, (size, size, 3))
                pixels[..., index] += 180
                Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{name}_{i}.jpg", quality=90)
    return root


def tiny_run_options(data: Path, output: Path, **overrides) -> list:
    """train.py options for a tiny CPU run of ResNet-18 + DropCov at 32x32 on :func:`make_image_folder`."""
    options = {
        "config_path": str(REPO_ROOT / "config" / "digits_demo_cpu.yaml"),
        "data_path": str(data), "output_path": str(output), "class_num": len(CLASSES),
        "train_image_size": 32, "eval_image_size": 32, "batch_size": 3, "num_parallel_workers": 1,
        "epoch_size": 2, "train_steps_per_epoch": 2, "log_interval": 1, "run_eval": False,
        "lr_decay_mode": "linear", "lr_init": 0.01, "lr_max": 0.05, "lr_end": 0.0, "warmup_epochs": 0.5,
        "keep_checkpoint_max": 5,
    }
    options.update(overrides)
    argv = []
    for key, value in options.items():
        argv += [f"--{key}", str(value)]
    return argv


def subprocess_env(**extra: str) -> dict:
    """Environment for child processes: the venv's bin first on PATH (msrun workers run plain
    ``python``), oneDNN at AVX2, MindSpore's C++ logs at errors only."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("ONEDNN_MAX_CPU_ISA", "AVX2")
    env.setdefault("GLOG_v", "3")
    env.update(extra)
    return env


def run_train(argv: Sequence[str], timeout: float = 240, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO_ROOT / "train.py"), *argv], cwd=REPO_ROOT,
                          env=subprocess_env(), capture_output=True, text=True, timeout=timeout, **kwargs)


def start_train(argv: Sequence[str], log_path: Path) -> subprocess.Popen:
    """train.py in the background, stdout and stderr into ``log_path``."""
    with open(log_path, "w") as stream:  # the child keeps its own copy of the descriptor
        return subprocess.Popen([sys.executable, str(REPO_ROOT / "train.py"), *argv], cwd=REPO_ROOT,
                                env=subprocess_env(), stdout=stream, stderr=subprocess.STDOUT)


def wait_for(condition: Callable[[], bool], process: subprocess.Popen, timeout: float, what: str,
             poll: float = 0.05) -> None:
    """Poll ``condition`` until true; fail if ``process`` exits first or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            raise AssertionError(f"process exited ({process.returncode}) before {what}")
        if time.monotonic() > deadline:
            process.send_signal(signal.SIGKILL)
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(poll)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def descendants(pid: int) -> list[int]:
    """Every process below ``pid``, whatever their sessions (msrun, mpirun and srun start ranks in sessions of
    their own)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found, pending = [], [pid]
    while pending:
        for child in children.get(pending.pop(), []):
            found.append(child)
            pending.append(child)
    return found


def kill_tree(process: subprocess.Popen) -> None:
    """SIGKILL ``process`` and everything below it (a failed test must leave no rank or scheduler running)."""
    for pid in [*descendants(process.pid), process.pid]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    process.wait(timeout=30)
