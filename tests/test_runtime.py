"""Runtime helpers: oneDNN environment, launcher detection, one-line errors from entry points."""
import os
import subprocess
import sys

import pytest

from src.cli import run_entry_point
from src.errors import DropCovError
from src.runtime.distributed import init_data_parallel


def run_configure(repo_root, calls: str, isa: str | None = None) -> list[str]:
    """Run ``calls`` (using ``c = configure_cpu_environment``) in a fresh interpreter, INFO logs on stdout.

    ``ONEDNN_MAX_CPU_ISA`` is removed from the child's environment, or set to ``isa``.
    """
    code = ("import logging, os, sys; logging.basicConfig(level=logging.INFO, stream=sys.stdout);"
            "from src.runtime.environment import configure_cpu_environment as c;" + calls)
    env = {k: v for k, v in os.environ.items() if k != "ONEDNN_MAX_CPU_ISA"}
    if isa is not None:
        env["ONEDNN_MAX_CPU_ISA"] = isa
    return subprocess.run([sys.executable, "-c", code], cwd=repo_root, env=env, capture_output=True,
                          text=True, check=True).stdout.splitlines()


def test_configure_cpu_environment_sets_avx2_before_import(repo_root):
    out = run_configure(repo_root, "print(c('GPU')); print(c('CPU')); print(os.environ['ONEDNN_MAX_CPU_ISA'])")
    assert out[0] == "None"
    assert "set ONEDNN_MAX_CPU_ISA=AVX2" in out[1]
    assert out[2:] == ["AVX2", "AVX2"]


def test_configure_cpu_environment_respects_user_value(repo_root):
    out = run_configure(repo_root, "print(c('CPU'), os.environ['ONEDNN_MAX_CPU_ISA'])", isa="AVX512_CORE")
    assert out == ["None AVX512_CORE"]


def test_configure_cpu_environment_leaves_the_isa_alone_for_the_blocked_kernels(repo_root):
    out = run_configure(repo_root, "print(c('CPU', full_isa=True)); "
                                   "print(os.environ.get('ONEDNN_MAX_CPU_ISA', 'unset'))")
    assert "oneDNN keeps its full instruction set" in out[0]
    assert out[1:] == ["None", "unset"]


def test_single_process_never_initialises():
    info = init_data_parallel(False, "CPU", device_num=4)
    assert (info.rank, info.group_size, info.launcher, info.is_main) == (0, 1, None, True)


def test_distributed_without_launcher_says_how_to_launch(monkeypatch):
    for key in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MS_ROLE", "MS_WORKER_NUM", "SLURM_PROCID"):
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(DropCovError, match=r"not started by mpirun, srun or msrun: start it with a launcher: `mpirun"):
        init_data_parallel(True, "CPU")


def test_entry_point_prints_one_line(capsys):
    def main(argv):
        raise DropCovError("data_path /x: not found\n(second line)")

    assert run_entry_point(main, [], program="train.py") == 2
    err = capsys.readouterr().err
    assert err == "train.py: error: data_path /x: not found (second line)\n"


def test_entry_point_debug_reraises():
    def main(argv):
        raise DropCovError("boom")

    with pytest.raises(DropCovError, match="boom"):
        run_entry_point(main, ["--debug"])


def test_entry_point_returns_main_code():
    assert run_entry_point(lambda argv: None, []) == 0
    assert run_entry_point(lambda argv: 3, []) == 3
