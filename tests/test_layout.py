"""Parameter layout of the published checkpoints (tests/data/checkpoint_layout/*.tsv) and a round trip."""
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor

from src.models import create_model

LAYOUT_DIR = Path(__file__).parent / "data" / "checkpoint_layout"


def _read_layout(net_name: str) -> list:
    lines = (LAYOUT_DIR / f"{net_name}_dropcov_1001.tsv").read_text().splitlines()
    assert lines[0].split("\t") == ["name", "shape", "trainable"]
    rows = []
    for line in lines[1:]:
        name, shape, trainable = line.split("\t")
        rows.append((name, tuple(int(s) for s in shape.split("x")), trainable == "true"))
    return rows


@pytest.mark.parametrize("net_name", ["resnet18", "resnet34", "resnet50"])
def test_parameters_match_the_published_layout(net_name):
    net = create_model(net_name, num_classes=1001)
    ours = [(p.name, tuple(p.shape), p.requires_grad) for p in net.get_parameters()]
    expected = _read_layout(net_name)
    assert [row[0] for row in ours] == [row[0] for row in expected]  # names, in order
    assert ours == expected  # shapes and trainable flags


def _perturb_batch_norm_statistics(net, rng):
    for param in net.get_parameters():
        if param.name.endswith("moving_mean"):
            param.set_data(Tensor(rng.standard_normal(param.shape).astype(np.float32) * 0.1))
        elif param.name.endswith("moving_variance"):
            param.set_data(Tensor(rng.uniform(0.5, 1.5, param.shape).astype(np.float32)))


def test_checkpoint_in_published_layout_loads_and_gives_identical_logits(tmp_path):
    rng = np.random.default_rng(0)
    ms.set_seed(1)
    writer = create_model("resnet18", num_classes=1001)
    _perturb_batch_norm_statistics(writer, rng)
    params = [{"name": p.name, "data": p.data} for p in writer.get_parameters()]
    # what a training run's checkpoint also holds, which evaluation must ignore
    moments = [{"name": f"moments.{p.name}", "data": Tensor(np.zeros(p.shape, np.float32))}
               for p in writer.trainable_params()[:3]]
    extras = [{"name": "global_step", "data": Tensor(np.array([5004], np.int32))},
              {"name": "momentum", "data": Tensor(np.array(0.9, np.float32))},
              {"name": "learning_rate", "data": Tensor(np.array(0.12, np.float32))},
              {"name": "epoch_num", "data": Tensor(np.array([1], np.int32))},
              {"name": "step_num", "data": Tensor(np.array([5004], np.int32))}]
    path = tmp_path / "resnet18_dropcov.ckpt"
    ms.save_checkpoint(params + moments + extras, str(path))

    ms.set_seed(2)
    reader = create_model("resnet18", num_classes=1001)
    images = Tensor(rng.standard_normal((2, 3, 64, 64)).astype(np.float32))
    assert not np.allclose(reader(images).asnumpy(), writer(images).asnumpy())
    param_not_loaded, ckpt_not_loaded = ms.load_param_into_net(reader, ms.load_checkpoint(str(path)))
    assert param_not_loaded == []
    assert sorted(ckpt_not_loaded) == sorted(e["name"] for e in moments + extras)
    np.testing.assert_array_equal(reader(images).asnumpy(), writer(images).asnumpy())
