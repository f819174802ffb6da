"""A checkpoint's raw and EMA weights: choosing one set, and the EMA entries counting as bookkeeping when a
network's own weights are loaded; the transformers' weight-decay exemption declared by the model."""
import numpy as np
import pytest

from src.errors import DropCovError
from src.models.ema_weights import BEST_WEIGHTS_ENTRY, has_ema, select_weights

CHECKPOINT = {"fc.weight": np.ones(2), "fc.bias": np.zeros(1), "ema.fc.weight": np.full(2, 3.0),
              "ema.fc.bias": np.full(1, 4.0), "ema_num_updates": np.int32(7), "global_step": np.int32(9)}


def test_raw_ema_and_auto_selection():
    raw, used = select_weights(CHECKPOINT, "raw")
    assert used == "raw" and raw == CHECKPOINT
    ema, used = select_weights(CHECKPOINT, "ema")
    assert used == "ema" and set(ema) == {"fc.weight", "fc.bias", "ema_num_updates", "global_step"}
    np.testing.assert_array_equal(ema["fc.weight"], [3.0, 3.0])
    assert select_weights(CHECKPOINT, "auto")[1] == "raw"  # a periodic checkpoint names no winner
    assert select_weights({**CHECKPOINT, BEST_WEIGHTS_ENTRY: "ema"}, "auto")[1] == "ema"
    assert select_weights({**CHECKPOINT, BEST_WEIGHTS_ENTRY: "raw"}, "auto")[1] == "raw"
    assert has_ema(CHECKPOINT) and not has_ema({"fc.weight": 1})


def test_ema_of_a_checkpoint_without_one_is_one_clear_error():
    with pytest.raises(DropCovError, match="run.ckpt holds no EMA weights.*--eval_weights raw"):
        select_weights({"fc.weight": np.ones(2)}, "ema", "run.ckpt")
    with pytest.raises(DropCovError, match="eval_weights 'best'"):
        select_weights(CHECKPOINT, "best")


def test_ema_entries_are_bookkeeping_for_the_network_loader():
    from src.models.weights import is_bookkeeping

    assert is_bookkeeping("ema.conv1.weight", np.ones((2, 2))) and is_bookkeeping("accum.conv1.weight", np.ones(2))
    assert not is_bookkeeping("conv1.weight", np.ones((2, 2)))


def test_the_transformers_exempt_their_class_token_from_weight_decay():
    from src.engine.optimizer import create_optimizer
    from src.models import create_model

    net = create_model("deit_small_dropcov", num_classes=5, image_size=32, embed_dim=48, depth=1, num_heads=3,
                       mlp_ratio=2.0, wr_heads=2, wr_dim=8)
    assert net.no_weight_decay() == {"cls_token"}
    optimizer = create_optimizer(net, "AdamW", 1e-3, weight_decay=0.05)
    decay = {param.name: float(value.asnumpy()) for param, value in zip(optimizer.parameters, optimizer.decoupled_decay)}
    assert decay["cls_token"] == 0.0
    assert any(value > 0 for name, value in decay.items() if name.endswith("weight"))
