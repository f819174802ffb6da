"""MindSpore's GPU plugin choice and needs, read from the installed wheel (src/runtime/gpu_plugin.py, elf.py),
held against MindSpore's own behaviour and readelf; check_env and the "no usable GPU" error on this CPU machine."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from train_helpers import REPO_ROOT, subprocess_env

from src.runtime import gpu_plugin
from src.runtime.elf import find_library, read_dynamic_section

PLUGINS = gpu_plugin.gpu_plugins()
NEWEST = PLUGINS[max(PLUGINS)]


def fake_cuda_home(root: Path, release: str | None) -> Path:
    """A folder whose bin/nvcc prints nvcc's version banner for ``release`` (None: no nvcc at all)."""
    (root / "bin").mkdir(parents=True, exist_ok=True)
    if release is not None:
        nvcc = root / "bin" / "nvcc"
        nvcc.write_text("#!/bin/sh\necho 'nvcc: NVIDIA (R) Cuda compiler driver'\n"
                        f"echo 'Cuda compilation tools, release {release}, V{release}.89'\n")
        nvcc.chmod(0o755)
    return root


def without_cuda(**extra: str) -> dict:
    env = subprocess_env(**extra)
    for name in ("CUDA_HOME", "LD_LIBRARY_PATH"):
        if name not in extra:
            env.pop(name, None)
    return env


def test_the_wheel_has_cuda_11_plugins():
    assert set(PLUGINS) == {(11, 1), (11, 6)}


@pytest.mark.parametrize("cuda, expected", [((11, 8), (11, 6)), ((11, 6), (11, 6)), ((11, 7), (11, 6)),
                                            ((11, 4), (11, 1)), ((11, 1), (11, 1)), ((11, 0), None),
                                            ((10, 2), None), ((12, 4), None), ((13, 0), None)])
def test_select_plugin_version(cuda, expected):
    assert gpu_plugin.select_plugin_version(cuda, [(11, 1), (11, 6)]) == expected


@pytest.mark.parametrize("release, problem", [("11.1", False), ("11.4", True), ("11.5", True), ("11.6", False),
                                              ("11.8", False)])
def test_the_plugins_toolkits_follow_from_the_nvrtc_they_need(tmp_path, release, problem):
    """The 11.1 plugin needs libnvrtc.so.11.1 (read from the file), which CUDA 11.2 and later do not ship: MindSpore
    picks it for CUDA 11.2-11.5, where it cannot load, and the check says so instead of a pip fix that cannot work."""
    plugins = gpu_plugin.gpu_plugins()
    assert {version: gpu_plugin.plugin_nvrtc(path) for version, path in plugins.items()} == {(11, 1): (11, 1),
                                                                                           (11, 6): (11, 2)}
    choice = gpu_plugin.choose_gpu_plugin(str(fake_cuda_home(tmp_path / "cuda", release)))
    assert choice.plugin is not None
    if problem:
        assert choice.plugin.name == "libmindspore_gpu.so.11.1"
        assert f"holds CUDA {release}: MindSpore picks libmindspore_gpu.so.11.1, which needs libnvrtc.so.11.1, " \
               "shipped by CUDA 11.1 only" in choice.problem
        assert "CUDA 11.6-11.8" in choice.fix
    else:
        assert choice.problem == ""
    label, fix = gpu_plugin.library_label("libnvrtc.so.11.1")
    assert label == "NVRTC" and "pip install" not in fix and fix.startswith("libnvrtc.so.11.1 comes with the CUDA 11.1")
    assert gpu_plugin.library_label("libnvrtc.so.11.2") == ("NVRTC", "pip install nvidia-cuda-nvrtc-cu11")


PROBE = ("import mindspore; from mindspore._c_expression import MSContext; "
         "print(MSContext.get_instance().load_plugin_error())")


@pytest.mark.slow
@pytest.mark.parametrize("release, log_words", [
    ("11.8", None), ("11.4", None),
    ("12.4", "but can not find suitable gpu plugin"),
    (None, "can not find nvcc file"),
    ("unset", "Please set env CUDA_HOME to path of cuda"),
])
def test_rule_matches_mindspores_own_choice(tmp_path, release, log_words):
    """Each CUDA_HOME: the plugin our rule names is the one MindSpore tries to open (and fails: no CUDA here);
    where the rule names none, MindSpore opens no GPU plugin and logs the reason our message restates."""
    home = "" if release == "unset" else str(fake_cuda_home(tmp_path / "cuda", release))
    env = without_cuda(GLOG_v="1", **({"CUDA_HOME": home} if home else {}))
    result = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    tried = [line for line in result.stdout.splitlines() if "libmindspore_gpu" in line]
    choice = gpu_plugin.choose_gpu_plugin(home)
    if log_words is None:
        assert choice.plugin is not None
        assert len(tried) == 1 and f"Load dynamic library: {choice.plugin.name} failed." in tried[0], result.stdout
    else:
        assert choice.plugin is None and choice.problem and choice.fix
        assert tried == [] and log_words in result.stderr, result.stderr[-3000:]


@pytest.mark.skipif(shutil.which("readelf") is None, reason="needs binutils' readelf")
@pytest.mark.parametrize("library", [NEWEST, NEWEST.parent.parent / "libmpi_collective.so",
                                     NEWEST.parent / "gpu11.6" / "libnvidia_collective.so"])
def test_dynamic_section_matches_readelf(library):
    out = subprocess.run(["readelf", "-d", str(library)], capture_output=True, text=True, check=True).stdout
    needed = [line.split("[", 1)[1].rstrip("]") for line in out.splitlines() if "(NEEDED)" in line]
    rpath = [line.split("[", 1)[1].rstrip("]") for line in out.splitlines() if "(RPATH)" in line]
    dynamic = read_dynamic_section(library)
    assert dynamic.needed == needed and len(needed) > 3
    origin = str(library.resolve().parent)
    assert dynamic.rpath == [d.replace("$ORIGIN", origin) for d in ":".join(rpath).split(":") if d]


def test_outside_libraries_of_the_plugin_are_the_cuda_ones(tmp_path, monkeypatch):
    monkeypatch.delenv("LD_LIBRARY_PATH", raising=False)
    monkeypatch.setattr(gpu_plugin, "pip_cuda_root", lambda: None)
    names = [lib.name for lib in gpu_plugin.outside_libraries(NEWEST)]
    assert names == ["libcublas.so.11", "libcurand.so.10", "libcudnn.so.8", "libcudart.so.11.0", "libcuda.so.1",
                     "libcusolver.so.11", "libcufft.so.10", "libcusparse.so.11", "libnvrtc.so.11.2"]
    assert [lib.name for lib in gpu_plugin.outside_libraries(NEWEST.parent.parent / "libmpi_collective.so")] \
        == ["libmpi.so.40"]
    # a library on LD_LIBRARY_PATH is found there; one only in a pip nvidia package gets the export line
    found_dir = tmp_path / "ld"
    found_dir.mkdir()
    (found_dir / "libcublas.so.11").write_bytes(b"")
    pip_root = tmp_path / "site" / "nvidia"
    (pip_root / "cudnn" / "lib").mkdir(parents=True)
    (pip_root / "cudnn" / "lib" / "libcudnn.so.8").write_bytes(b"")
    monkeypatch.setenv("LD_LIBRARY_PATH", str(found_dir))
    monkeypatch.setattr(gpu_plugin, "pip_cuda_root", lambda: pip_root)
    libs = {lib.name: lib for lib in gpu_plugin.outside_libraries(NEWEST)}
    assert libs["libcublas.so.11"].path == found_dir / "libcublas.so.11"
    assert libs["libcudnn.so.8"].path is None
    assert libs["libcudnn.so.8"].fix.startswith(f"export LD_LIBRARY_PATH={pip_root / 'cudnn' / 'lib'}:")
    assert libs["libnvrtc.so.11.2"].fix == "pip install nvidia-cuda-nvrtc-cu11"
    assert "NVIDIA driver" in libs["libcuda.so.1"].fix


def test_find_library_follows_rpath_into_the_wheel():
    dynamic = read_dynamic_section(NEWEST)
    assert find_library("libcuda_ops.so.11", dynamic) == NEWEST.parent / "gpu" / "libcuda_ops.so.11"
    assert find_library("libc.so.6", dynamic) is not None
    assert find_library("libdoes_not_exist.so.7", dynamic) is None


@pytest.mark.slow
def test_cuda_pip_env_sets_a_cuda_home_that_selects_the_cuda_11_6_plugin(tmp_path):
    """scripts/cuda_pip_env.sh against a fake pip layout: LD_LIBRARY_PATH gets nvidia/*/lib, CUDA_HOME a
    version-only nvcc of the runtime package's version, and MindSpore then picks its CUDA 11.6 plugin."""
    site = tmp_path / "site"
    for package in ("cublas", "cudnn"):
        (site / "nvidia" / package / "lib").mkdir(parents=True)
    dist = site / "nvidia_cuda_runtime_cu11-11.8.89.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: nvidia-cuda-runtime-cu11\nVersion: 11.8.89\n")
    env = without_cuda(PYTHONPATH=str(site), PYTHON=sys.executable, DROPCOV_CUDA_HOME=str(tmp_path / "home"))
    script = f"source {REPO_ROOT}/scripts/cuda_pip_env.sh && echo \"$CUDA_HOME\" && echo \"$LD_LIBRARY_PATH\""
    result = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    cuda_home, ld_path = result.stdout.splitlines()[-2:]
    assert cuda_home == str(tmp_path / "home")
    assert ld_path.split(":") == [str(site / "nvidia" / "cublas" / "lib"), str(site / "nvidia" / "cudnn" / "lib")]
    assert gpu_plugin.nvcc_release(Path(cuda_home) / "bin" / "nvcc") == (11, 8)
    assert gpu_plugin.choose_gpu_plugin(cuda_home).plugin == NEWEST
    probe = subprocess.run([sys.executable, "-c", PROBE], env=without_cuda(CUDA_HOME=cuda_home),
                           capture_output=True, text=True, timeout=120)
    assert f"Load dynamic library: {NEWEST.name} failed." in probe.stdout
    compile_attempt = subprocess.run([f"{cuda_home}/bin/nvcc", "-c", "x.cu"], capture_output=True, text=True)
    assert compile_attempt.returncode == 1 and "version-only stand-in" in compile_attempt.stderr


def run_check_env(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "scripts/check_env.py", *args], cwd=REPO_ROOT, env=without_cuda(**env),
                          capture_output=True, text=True, timeout=180)


def line_of(output: str, name: str) -> str:
    """The line of the check called ``name`` (``VERDICT  name  detail``)."""
    return next(line for line in output.splitlines() if re.split(r"\s{2,}", line)[1:2] == [name])


def fix_after(output: str, name: str) -> str:
    lines = output.splitlines()
    index = lines.index(line_of(output, name))
    return lines[index + 1].strip() if lines[index + 1].lstrip().startswith("fix:") else ""


@pytest.mark.slow
def test_check_env_without_cuda_home_names_it():
    result = run_check_env("--gpu")
    assert result.returncode == 1
    plugin = line_of(result.stdout, "GPU plugin (CUDA_HOME)")
    assert plugin.startswith("FAIL") and "CUDA_HOME is not set" in plugin
    assert "export CUDA_HOME=/usr/local/cuda-11.8" in fix_after(result.stdout, "GPU plugin (CUDA_HOME)")
    device = line_of(result.stdout, "device GPU")
    assert device.startswith("FAIL") and "CUDA_HOME is not set" in device
    # the libraries of the plugin a CUDA 11.8 toolkit would get are listed all the same
    assert line_of(result.stdout, f"NVRTC libnvrtc.so.11.2 (for {NEWEST.name})").startswith("FAIL")
    assert result.stdout.rstrip().endswith("verdict: NOT READY")


@pytest.mark.slow
def test_check_env_with_a_cuda_11_8_nvcc_names_each_missing_library(tmp_path):
    home = fake_cuda_home(tmp_path / "cuda", "11.8")
    result = run_check_env("--gpu", CUDA_HOME=str(home))
    assert result.returncode == 1
    plugin = line_of(result.stdout, "GPU plugin (CUDA_HOME)")
    assert plugin.startswith("OK") and f"nvcc reports CUDA 11.8, MindSpore picks {NEWEST.name}" in plugin
    device = line_of(result.stdout, "device GPU")  # MindSpore's own reason: the first library dlopen missed
    assert f"Load dynamic library: {NEWEST.name} failed. libcublas.so.11: cannot open shared object file" in device
    for name, fix in (("cuBLAS libcublas.so.11", "pip install nvidia-cublas-cu11"),
                      ("NVRTC libnvrtc.so.11.2", "pip install nvidia-cuda-nvrtc-cu11"),
                      ("cuFFT libcufft.so.10", "pip install nvidia-cufft-cu11"),
                      ("cuSPARSE libcusparse.so.11", "pip install nvidia-cusparse-cu11")):
        assert line_of(result.stdout, name).startswith("FAIL"), name
        assert fix_after(result.stdout, name) == f"fix: {fix}"
    nccl = line_of(result.stdout, "NCCL (bundled)")
    assert nccl.startswith("OK") and str(NEWEST.parent / "gpu11.6" / "libnccl.so.2") in nccl
    assert "needed by libmpi_collective.so" in line_of(result.stdout, "OpenMPI 4.x libmpi.so.40 (mpirun)")


@pytest.mark.slow
def test_check_env_reads_hopper_and_driver_from_nvidia_smi(tmp_path):
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'NVIDIA H100 80GB HBM3, 9.0, 515.65.01'\n")
    smi.chmod(0o755)
    home = fake_cuda_home(tmp_path / "cuda", "11.6")
    result = run_check_env(PATH=f"{tmp_path}:{os.environ['PATH']}", CUDA_HOME=str(home))
    driver = line_of(result.stdout, "NVIDIA driver")
    assert driver.startswith("WARN") and "515.65.01; NVIDIA H100 80GB HBM3 (compute capability 9.0)" in driver
    assert line_of(result.stdout, "CUDA 11.8 for sm_89/sm_90").startswith("WARN")
    assert line_of(result.stdout, "cuBLAS >= 11.11 for sm_89/sm_90").startswith("WARN")
    cache = line_of(result.stdout, "CUDA JIT cache")  # the default folder, writable here
    assert cache.startswith("OK") and "JIT-compiled at the first collective on compute capability 9" in cache
    assert "MindSpore's own on Hopper" in cache


@pytest.mark.slow
def test_check_env_asks_for_a_writable_jit_cache_on_any_gpu_newer_than_pascal(tmp_path):
    """NCCL 2.16.5 in the wheel has sm_60 code only: a V100 (7.0) JIT-compiles it too; a P100 (6.0) does not."""
    smi = tmp_path / "nvidia-smi"
    for name, capability, expected in (("Tesla V100-SXM2-16GB", "7.0", True), ("Tesla P100-PCIE-16GB", "6.0", False)):
        smi.write_text(f"#!/bin/sh\necho '{name}, {capability}, 535.104.05'\n")
        smi.chmod(0o755)
        result = run_check_env(PATH=f"{tmp_path}:{os.environ['PATH']}", CUDA_CACHE_DISABLE="1")
        lines = [line for line in result.stdout.splitlines() if "CUDA JIT cache" in line]
        assert bool(lines) == expected, result.stdout
        if expected:
            assert lines[0].startswith("WARN") and "CUDA_CACHE_DISABLE=1" in lines[0]
            assert "export CUDA_CACHE_PATH=" in fix_after(result.stdout, "CUDA JIT cache")


@pytest.mark.slow
@pytest.mark.parametrize("release, reason", [
    ("unset", "CUDA_HOME is not set, and MindSpore loads its GPU plugin only when $CUDA_HOME/bin/nvcc"),
    ("11.8", f"MindSpore could not load its GPU plugin: Load dynamic library: {NEWEST.name} failed. "
             "libcublas.so.11: cannot open shared object file"),
    ("12.4", "holds CUDA 12.4, but MindSpore's GPU plugins are built for CUDA 11.1 and 11.6 only"),
])
def test_train_on_gpu_here_stops_with_one_line_holding_mindspores_reason(tmp_path, release, reason):
    env = without_cuda() if release == "unset" else without_cuda(
        CUDA_HOME=str(fake_cuda_home(tmp_path / "cuda", release)))
    result = subprocess.run([sys.executable, "train.py", "--config_path", "config/digits_demo_cpu.yaml",
                             "--data_path", str(tmp_path), "--device_target", "GPU", "--output_path",
                             str(tmp_path / "out")], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("train.py: error: device_target GPU: MindSpore sees no usable GPU here: ")
    assert reason in lines[0]
    assert "--device_target CPU" in lines[0]
