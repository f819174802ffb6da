"""export: MINDIR round trip (same logits as the source network), ONNX support or a clear error."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest

from export import batch_size_given
from src.engine.export import (
    export_input,
    export_network,
    export_path,
    load_exported,
)
from src.errors import DropCovError
from src.models.cell_surgery import EdgePaddedMaxPool2d, exportable_max_pools

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG = REPO_ROOT / "config" / "resnet18_imagenet2012_config.yaml"


def test_export_path_and_input():
    assert export_path("out/r18", "MINDIR") == Path("out/r18.mindir")
    assert export_path("out/r18.onnx", "onnx") == Path("out/r18.onnx")
    assert export_path("r18.v2", "AIR") == Path("r18.v2.air")
    with pytest.raises(DropCovError, match="file_format='TFLITE'"):
        export_path("r18", "TFLITE")
    assert export_input(2, 40).shape == (2, 3, 40, 40)
    with pytest.raises(DropCovError, match="batch size"):
        export_input(0, 32)


def test_batch_size_comes_from_the_command_line_only():
    assert not batch_size_given(["--config_path=x.yaml", "--eval_image_size", "224"])
    assert batch_size_given(["--batch_size", "8"]) and batch_size_given(["--batch_size=8"])


@pytest.fixture(scope="module")
def trained_like(tmp_path_factory):
    """A resnet18 (10 classes) with spread-out classifier weights, saved as a checkpoint."""
    from src.models import create_model

    root = tmp_path_factory.mktemp("export")
    ms.set_seed(4)
    net = create_model("resnet18", num_classes=10)
    rng = np.random.default_rng(1)
    net.head.fc.weight.set_data(ms.Tensor(rng.normal(0, 0.3, net.head.fc.weight.shape).astype(np.float32)))
    checkpoint = root / "r18_c10.ckpt"
    ms.save_checkpoint(net, str(checkpoint))
    return net, checkpoint, root


@pytest.mark.slow
def test_export_script_mindir_gives_the_same_logits(trained_like, tmp_path):
    net, checkpoint, _ = trained_like
    env = dict(os.environ, GLOG_v="3", PYTHONPATH=str(REPO_ROOT))
    command = [sys.executable, str(REPO_ROOT / "export.py"), f"--config_path={CONFIG}",
               f"--checkpoint_file_path={checkpoint}", "--device_target=CPU", "--class_num=10",
               "--eval_image_size=32", "--batch_size=2", f"--file_name={tmp_path / 'models' / 'r18'}"]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    exported = tmp_path / "models" / "r18.mindir"
    assert exported.is_file() and str(exported) in result.stdout

    images = ms.Tensor(np.random.default_rng(7).normal(size=(2, 3, 32, 32)).astype(np.float32))
    net.set_train(False)
    expected = net(images).asnumpy()
    restored = load_exported(exported)(images).asnumpy()
    assert restored.shape == (2, 10)
    np.testing.assert_allclose(restored, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_onnx_export_gives_the_same_logits(trained_like, tmp_path):
    net, _, _ = trained_like
    written = export_network(net, tmp_path / "r18", "ONNX", image_size=32, batch_size=2)
    assert written == tmp_path / "r18.onnx" and written.stat().st_size > 0
    onnxruntime = pytest.importorskip("onnxruntime")
    images = np.random.default_rng(8).normal(size=(2, 3, 32, 32)).astype(np.float32)
    net.set_train(False)
    expected = net(ms.Tensor(images)).asnumpy()
    session = onnxruntime.InferenceSession(str(written), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: images})
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def _numpy_max_pool(x, kernel, stride, padding):
    """Max-pool with -inf padding (what a padded MaxPool2d means), straight from the definition."""
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    padded = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=-np.inf)
    oh, ow = (padded.shape[2] - kh) // sh + 1, (padded.shape[3] - kw) // sw + 1
    windows = [padded[:, :, i:i + sh * (oh - 1) + 1:sh, j:j + sw * (ow - 1) + 1:sw]
               for i in range(kh) for j in range(kw)]
    return np.max(windows, axis=0)


@pytest.mark.parametrize("kernel, stride, padding, shape", [
    ((3, 3), (2, 2), (1, 1), (2, 3, 9, 10)),
    ((3, 2), (2, 1), (1, 0), (1, 2, 7, 8)),
    ((5, 5), (1, 1), (2, 2), (1, 2, 6, 7)),
])
def test_edge_padded_pool_equals_the_padded_pool_on_any_input(kernel, stride, padding, shape):
    x = np.random.default_rng(2).standard_normal(shape).astype(np.float32)
    twin = EdgePaddedMaxPool2d(kernel, stride, padding)
    pool = ms.nn.MaxPool2d(kernel_size=kernel, stride=stride, pad_mode="pad", padding=padding)
    expected = _numpy_max_pool(x, kernel, stride, padding)
    np.testing.assert_array_equal(twin(ms.Tensor(x)).asnumpy(), expected)
    np.testing.assert_array_equal(pool(ms.Tensor(x)).asnumpy(), expected)


def test_export_swaps_the_padded_stem_pool_and_puts_it_back():
    """Training keeps the fast padded pool (MaxPool3DWithArgmax); only the export sees the twin."""
    from src.models import create_model

    net = create_model("resnet18", num_classes=10)
    tail = ms.nn.SequentialCell([ms.nn.ReLU(), ms.nn.MaxPool2d(kernel_size=3, stride=2, pad_mode="pad", padding=1)])
    stem_pool, tail_pool = net.backbone.maxpool, tail[1]
    with exportable_max_pools(net), exportable_max_pools(tail):
        assert isinstance(net.backbone.maxpool, EdgePaddedMaxPool2d)
        assert isinstance(tail[1], EdgePaddedMaxPool2d) and isinstance(tail.cell_list[1], EdgePaddedMaxPool2d)
        assert net.backbone.maxpool.pool.pad_mode == "VALID"
    assert net.backbone.maxpool is stem_pool and tail[1] is tail_pool and tail.cell_list[1] is tail_pool


def test_load_exported_rejects_other_files(tmp_path):
    (tmp_path / "fake.mindir").write_text("not a graph")
    with pytest.raises(DropCovError, match="fake.mindir"):
        load_exported(tmp_path / "fake.mindir")


class _NoOnnxConverter(ms.nn.Cell):
    """A cell whose only operator (Erfinv) MindSpore 2.10 has no ONNX converter for."""

    def construct(self, x):
        return ms.ops.erfinv(x)


def test_unsupported_onnx_operator_is_named(tmp_path):
    """export_network reads the operator's name out of MindSpore's own message: if an upgrade rewords it
    (or learns to export Erfinv), this fails."""
    with pytest.raises(DropCovError) as caught:
        export_network(_NoOnnxConverter(), tmp_path / "erfinv", "ONNX", image_size=8)
    message = str(caught.value)
    assert "MindSpore has no ONNX converter for the Erfinv operator" in message and "\n" not in message


def test_a_failed_export_keeps_the_earlier_file_and_leaves_nothing_behind(tmp_path):
    """The export is written under a temporary name and renamed into place: a failure (here an operator
    without an ONNX converter) leaves an earlier file whole, no partial file, and no folder it created."""
    earlier = tmp_path / "erfinv.onnx"
    earlier.write_bytes(b"an earlier export")
    with pytest.raises(DropCovError, match="Erfinv"):
        export_network(_NoOnnxConverter(), tmp_path / "erfinv", "ONNX", image_size=8)
    assert earlier.read_bytes() == b"an earlier export"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["erfinv.onnx"]

    with pytest.raises(DropCovError, match="Erfinv"):
        export_network(_NoOnnxConverter(), tmp_path / "new" / "deeper" / "erfinv", "ONNX", image_size=8)
    assert not (tmp_path / "new").exists()


def test_a_stop_before_the_rename_leaves_no_file(tmp_path):
    """What ``before_commit`` raises (export.py's stop check) leaves neither the file nor its partial twin."""

    class Stopped(Exception):
        pass

    def stop():
        assert [path.name for path in tmp_path.iterdir()] == [f".tiny.{os.getpid()}.partial.mindir"]
        raise Stopped

    with pytest.raises(Stopped):
        export_network(_Flatten(), tmp_path / "tiny", "MINDIR", image_size=8, before_commit=stop)
    assert list(tmp_path.iterdir()) == []
    path = export_network(_Flatten(), tmp_path / "tiny", "MINDIR", image_size=8)
    assert path == tmp_path / "tiny.mindir" and path.is_file() and os.access(path, os.W_OK)


class _Flatten(ms.nn.Cell):
    def construct(self, x):
        return x.reshape(x.shape[0], -1).sum(axis=1)
