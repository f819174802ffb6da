"""The oneDNN blocked-layout convolution kernels (csrc/onednn_kernels.cc, src/kernels): build, numbers, wiring."""
import ctypes
import subprocess
import sys

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor, nn
from onednn_helpers import GradOfProbe, numpy_conv2d

from src.errors import DropCovError
from src.kernels import backend, build
from src.kernels.onednn_conv import OneDNNConv2d, can_replace
from src.kernels.swap import apply_conv_backend, use_onednn_convolutions
from src.models import create_model

KERNEL_ENTRY_POINTS = ("dropcov_conv2d_forward", "dropcov_conv2d_backward_data", "dropcov_conv2d_backward_filter")


@pytest.fixture(scope="module")
def library() -> str:
    return str(build.build_library())


def same_pads(size, kernel, stride, dilation):
    """MindSpore/TF 'same' padding of one axis: (before, after), the extra one after."""
    out = -(-size // stride)
    total = max((out - 1) * stride + dilation * (kernel - 1) + 1 - size, 0)
    return total // 2, total - total // 2


CASES = {
    "3x3 stride 1 pad 1": dict(cin=5, cout=7, size=9, kernel=3, stride=1, pad_mode="pad", padding=1),
    "3x3 stride 2 pad 1 (odd size)": dict(cin=4, cout=6, size=11, kernel=3, stride=2, pad_mode="pad", padding=1),
    "1x1 stride 2": dict(cin=6, cout=8, size=8, kernel=1, stride=2, pad_mode="pad", padding=0),
    "7x7 stride 2 pad 3": dict(cin=3, cout=8, size=15, kernel=7, stride=2, pad_mode="pad", padding=3),
    "same 3x3 stride 2 (even size)": dict(cin=4, cout=5, size=10, kernel=3, stride=2, pad_mode="same", padding=0),
    "same 7x7 stride 2 (odd size)": dict(cin=3, cout=4, size=13, kernel=7, stride=2, pad_mode="same", padding=0),
    "valid 3x3": dict(cin=3, cout=4, size=8, kernel=3, stride=1, pad_mode="valid", padding=0),
    "asymmetric pad (1,2,0,1)": dict(cin=3, cout=4, size=9, kernel=3, stride=2, pad_mode="pad", padding=(1, 2, 0, 1)),
    "dilation 2": dict(cin=3, cout=4, size=12, kernel=3, stride=1, pad_mode="pad", padding=2, dilation=2),
}


def make_pair(case, library, seed=0):
    """A stock nn.Conv2d and the OneDNNConv2d sharing its weight, plus the numpy padding."""
    conv = nn.Conv2d(case["cin"], case["cout"], case["kernel"], stride=case["stride"], pad_mode=case["pad_mode"],
                     padding=case["padding"], dilation=case.get("dilation", 1), has_bias=False)
    rng = np.random.default_rng(seed)
    conv.weight.set_data(Tensor(rng.standard_normal(conv.weight.shape).astype(np.float32)))
    dilation = case.get("dilation", 1)
    if case["pad_mode"] == "same":
        ph, pw = (same_pads(case["size"], case["kernel"], case["stride"], dilation),) * 2
        pads = (*ph, *pw)
    elif case["pad_mode"] == "valid":
        pads = (0, 0, 0, 0)
    else:
        pads = case["padding"] if isinstance(case["padding"], tuple) else (case["padding"],) * 4
    return conv, OneDNNConv2d(conv, library), pads


@pytest.mark.parametrize("name", list(CASES))
def test_forward_matches_numpy_and_gradients_match_stock_conv(name, library):
    case = CASES[name]
    stock, fast, pads = make_pair(case, library)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, case["cin"], case["size"], case["size"] - 1)).astype(np.float32)
    dilation = case.get("dilation", 1)
    expected = numpy_conv2d(x, stock.weight.asnumpy(), (case["stride"],) * 2, (dilation,) * 2,
                            pads if case["pad_mode"] != "same" else
                            (*same_pads(x.shape[2], case["kernel"], case["stride"], dilation),
                             *same_pads(x.shape[3], case["kernel"], case["stride"], dilation)))
    y = fast(Tensor(x)).asnumpy()
    assert y.shape == expected.shape == stock(Tensor(x)).shape
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)

    probe = Tensor(rng.standard_normal(y.shape).astype(np.float32))
    (dx_fast, _), (dw_fast,) = GradOfProbe(fast)(Tensor(x), probe)
    (dx_stock, _), (dw_stock,) = GradOfProbe(stock)(Tensor(x), probe)
    np.testing.assert_allclose(dx_fast.asnumpy(), dx_stock.asnumpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(dw_fast.asnumpy(), dw_stock.asnumpy(), rtol=1e-4, atol=1e-3)


def test_conv1d_runs_as_a_1xk_convolution(library):
    """The ECA layer's nn.Conv1d (weight (out, in, 1, k)): values and gradients equal the stock Conv1d's."""
    stock = nn.Conv1d(2, 3, 3, pad_mode="pad", padding=1, has_bias=False)
    stock.weight.set_data(Tensor(np.random.default_rng(7).standard_normal(stock.weight.shape).astype(np.float32)))
    fast = OneDNNConv2d(stock, library)
    x = np.random.default_rng(8).standard_normal((4, 2, 17)).astype(np.float32)
    expected = numpy_conv2d(x[:, :, None], stock.weight.asnumpy(), (1, 1), (1, 1), (0, 0, 1, 1))[:, :, 0]
    np.testing.assert_allclose(fast(Tensor(x)).asnumpy(), expected, rtol=1e-5, atol=1e-5)
    probe = Tensor(np.random.default_rng(9).standard_normal(expected.shape).astype(np.float32))
    (dx_fast, _), (dw_fast,) = GradOfProbe(fast)(Tensor(x), probe)
    (dx_stock, _), (dw_stock,) = GradOfProbe(stock)(Tensor(x), probe)
    np.testing.assert_allclose(dx_fast.asnumpy(), dx_stock.asnumpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dw_fast.asnumpy(), dw_stock.asnumpy(), rtol=1e-5, atol=1e-4)


def test_backward_data_is_the_adjoint_of_the_forward(library):
    """<conv(x), g> == <x, conv^T(g)>: the backward-data kernel against the forward kernel, in float64 sums."""
    stock, fast, _ = make_pair(CASES["3x3 stride 2 pad 1 (odd size)"], library)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 4, 11, 11)).astype(np.float32)
    y = fast(Tensor(x)).asnumpy()
    g = rng.standard_normal(y.shape).astype(np.float32)
    (dx, _), _ = GradOfProbe(fast)(Tensor(x), Tensor(g))
    lhs = float((y.astype(np.float64) * g).sum())
    rhs = float((x.astype(np.float64) * dx.asnumpy()).sum())
    assert abs(lhs - rhs) <= 1e-4 * max(1.0, abs(lhs))


def test_pynative_mode_gives_the_graph_mode_numbers(library):
    stock, fast, _ = make_pair(CASES["3x3 stride 1 pad 1"], library)
    x = Tensor(np.random.default_rng(3).standard_normal((2, 5, 9, 9)).astype(np.float32))
    graph = fast(x).asnumpy()
    ms.set_context(mode=ms.PYNATIVE_MODE)
    try:
        pynative = fast(x).asnumpy()
    finally:
        ms.set_context(mode=ms.GRAPH_MODE)
    np.testing.assert_allclose(pynative, graph, rtol=1e-6, atol=1e-6)


class TwoBranches(nn.Cell):
    """Two same-shape convolutions on independent branches: MindSpore may run their kernels concurrently."""

    def __init__(self, library):
        super().__init__()
        self.left = OneDNNConv2d(nn.Conv2d(8, 8, 3, pad_mode="pad", padding=1, has_bias=False), library)
        self.right = OneDNNConv2d(nn.Conv2d(8, 8, 3, pad_mode="pad", padding=1, has_bias=False), library)

    def construct(self, a, b):
        return self.left(a) * 2 + self.right(b)


def test_repeated_and_concurrent_calls_stay_exact(library):
    net = TwoBranches(library)
    grad = ms.jit(ms.grad(net, grad_position=(0, 1), weights=net.trainable_params()))
    rng = np.random.default_rng(4)
    a = rng.standard_normal((4, 8, 16, 16)).astype(np.float32)
    b = rng.standard_normal((4, 8, 16, 16)).astype(np.float32)
    first = [t.asnumpy() for group in grad(Tensor(a), Tensor(b)) for t in group]
    for _ in range(30):
        again = [t.asnumpy() for group in grad(Tensor(a), Tensor(b)) for t in group]
        for x, y in zip(first, again):
            np.testing.assert_array_equal(x, y)


def test_library_exports_the_three_kernels(library):
    handle = ctypes.CDLL(library)
    for symbol in KERNEL_ENTRY_POINTS:
        assert getattr(handle, symbol) is not None


def test_resnet_swap_keeps_parameter_names_shapes_and_training_numbers(library):
    ms.set_seed(5)
    # no adaptive dropout: its random mask would differ between the two nets
    stock = create_model("resnet18", num_classes=10, adaptive_dropout=False)
    fast = create_model("resnet18", num_classes=10, adaptive_dropout=False)
    initial = {p.name: p.asnumpy().copy() for p in stock.get_parameters()}
    copies = {name: ms.Parameter(Tensor(value), name=name) for name, value in initial.items()}
    assert ms.load_param_into_net(fast, copies, strict_load=True) == ([], [])
    layout = [(p.name, p.shape, p.requires_grad) for p in fast.get_parameters()]
    convolutions = sum(can_replace(cell) for _, cell in fast.cells_and_names())
    # 17 backbone + 3 shortcuts + the head's reduction + its ECA Conv1d
    assert use_onednn_convolutions(fast, library) == convolutions == 22
    assert [(p.name, p.shape, p.requires_grad) for p in fast.get_parameters()] == layout
    assert not any(can_replace(cell) for _, cell in fast.cells_and_names())

    x = Tensor(np.random.default_rng(6).standard_normal((2, 3, 64, 64)).astype(np.float32))
    labels = Tensor(np.array([1, 7], np.int32))
    steps = [nn.TrainOneStepCell(nn.WithLossCell(net, nn.SoftmaxCrossEntropyWithLogits(sparse=True, reduction="mean")),
                                 nn.Momentum(net.trainable_params(), 0.05, 0.9)) for net in (stock, fast)]
    losses = [[], []]
    for index in range(3):
        for step, record in zip(steps, losses):
            step.set_train()
            record.append(float(step(x, labels).asnumpy()))
        if index == 0:
            # the first update is the gradient itself: the kernels' float32 summation order moves it by ~1e-4 of its
            # size (a wrong gradient moves it by tens of %)
            for p_fast, p_stock in zip(fast.get_parameters(), stock.get_parameters()):
                update = p_stock.asnumpy() - initial[p_stock.name]
                difference = p_fast.asnumpy() - p_stock.asnumpy()
                assert np.linalg.norm(difference) <= 2e-3 * np.linalg.norm(update) + 1e-7, p_fast.name
    # later steps amplify that order: a batch of 2 through BN at lr 0.05 grows a 1e-4 difference some 20-fold per
    # step (measured: 1e-4, 4e-3, 2e-2 of the update after 1, 2, 3 steps), so the losses are held loosely
    np.testing.assert_allclose(losses[1], losses[0], rtol=5e-3)


def test_resolve_conv_backend_choices(library):
    assert backend.resolve_conv_backend("stock", "CPU", "O0")[0] == "stock"
    assert backend.resolve_conv_backend("auto", "CPU", "O0") == ("onednn", library)
    assert backend.resolve_conv_backend("auto", "GPU", "O0")[0] == "stock"
    assert backend.resolve_conv_backend("auto", "CPU", "O2")[0] == "stock"
    with pytest.raises(DropCovError, match=r"conv_backend=onednn cannot run with device_target=GPU"):
        backend.resolve_conv_backend("onednn", "GPU", "O0")
    with pytest.raises(DropCovError, match=r"amp_level=O2 \(the kernels are float32\)"):
        backend.resolve_conv_backend("onednn", "CPU", "O2")
    with pytest.raises(DropCovError, match=r"conv_backend='fast' is not supported: choose one of auto, stock"):
        backend.resolve_conv_backend("fast", "CPU", "O0")


def test_missing_headers_fall_back_for_auto_and_fail_for_onednn(tmp_path, monkeypatch):
    monkeypatch.setenv("DROPCOV_KERNEL_DIR", str(tmp_path / "kernels"))
    monkeypatch.delenv("DROPCOV_ONEDNN_INCLUDE", raising=False)
    monkeypatch.setattr(sys, "prefix", str(tmp_path / "venv"))
    monkeypatch.setattr(sys, "base_prefix", str(tmp_path / "base"))
    used, why = backend.resolve_conv_backend("auto", "CPU", "O0")
    assert used == "stock" and "oneDNN headers not found" in why and "onednn-devel==" in why
    with pytest.raises(DropCovError, match=r"oneDNN headers not found .*pip install --no-deps onednn-devel=="):
        backend.resolve_conv_backend("onednn", "CPU", "O0")
    net = nn.SequentialCell([nn.Conv2d(3, 4, 3, has_bias=False)])
    assert apply_conv_backend(net, "auto", "CPU", "O0") == "stock"
    assert isinstance(net[0], nn.Conv2d)


def test_compiler_failure_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("DROPCOV_KERNEL_DIR", str(tmp_path / "kernels"))
    monkeypatch.setenv("CXX", "false")
    with pytest.raises(DropCovError, match=r"compiling csrc/onednn_kernels.cc failed \(false\): exit status 1"):
        build.build_library()
    assert not list((tmp_path / "kernels").glob("*.so"))


def test_rebuild_writes_the_digest_named_library_and_removes_stale_ones(tmp_path, monkeypatch):
    monkeypatch.setenv("DROPCOV_KERNEL_DIR", str(tmp_path))
    stale = tmp_path / "libdropcov_onednn-000000000000.so"
    stale.write_bytes(b"old")
    built = build.build_library()
    assert built == build.library_path() and built.parent == tmp_path and built.stat().st_size > 10_000
    assert not stale.exists()
    assert build.build_library() == built  # up to date: no rebuild


def test_build_command_line_prints_the_library(repo_root):
    result = subprocess.run([sys.executable, "-m", "src.kernels.build"], cwd=repo_root, capture_output=True,
                            text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(build.library_path())


def test_train_cli_rejects_onednn_on_gpu_in_one_line(repo_root, tmp_path):
    result = subprocess.run([sys.executable, "train.py", "--config_path", "config/digits_demo_cpu.yaml",
                             "--device_target", "GPU", "--conv_backend", "onednn", "--data_path", str(tmp_path),
                             "--output_path", str(tmp_path / "out")],
                            cwd=repo_root, capture_output=True, text=True, check=False)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines[-1] == ("train.py: error: conv_backend=onednn cannot run with device_target=GPU (the kernels are "
                         "CPU kernels): use conv_backend: auto or stock")
    assert "Traceback" not in result.stderr


def test_check_env_reports_the_kernels(repo_root, tmp_path):
    ok = subprocess.run([sys.executable, "scripts/check_env.py"], cwd=repo_root, capture_output=True, text=True,
                        check=False)
    line = next(line for line in ok.stdout.splitlines() if "oneDNN CPU kernels" in line)
    assert line.split()[0] == "OK" and str(build.library_path()) in line
    env = dict(__import__("os").environ, DROPCOV_KERNEL_DIR=str(tmp_path), CXX="false")
    broken = subprocess.run([sys.executable, "scripts/check_env.py"], cwd=repo_root, capture_output=True, text=True,
                            check=False, env=env)
    line = next(line for line in broken.stdout.splitlines() if "oneDNN CPU kernels" in line)
    assert line.split()[0] == "WARN" and "not built: compiling csrc/onednn_kernels.cc failed (false)" in line


def test_unwritable_kernel_folder_is_one_clear_error(tmp_path, monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("DROPCOV_KERNEL_DIR", str(blocker / "kernels"))
    with pytest.raises(DropCovError, match=r"cannot write the kernel library to .*a_file/kernels \(.*\): "
                                           r"set DROPCOV_KERNEL_DIR to a writable folder"):
        build.build_library()
    assert backend.resolve_conv_backend("auto", "CPU", "O0")[0] == "stock"
