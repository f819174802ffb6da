"""The transformer's CPU check (config/vit_digits_demo_cpu.yaml): the architecture keys that shrink it, and
a small DeiT-S + DropCov trained on scikit-learn's digits through the entry points in graph mode: train.py
stopped by SIGTERM and continued with ``--resume auto`` to the same final step, eval.py on the final
checkpoint (top-1 >= 90% from eval_results.json), export.py to MINDIR with the network's logits."""
from __future__ import annotations

import json
import re
import signal
from pathlib import Path

import numpy as np
import pytest
from test_robustness import run
from train_helpers import REPO_ROOT, run_train, start_train, wait_for

from src.config import load_config
from src.errors import DropCovError
from src.models import model_options

CONFIG = REPO_ROOT / "config" / "vit_digits_demo_cpu.yaml"
SMALL = {"embed_dim": 64, "depth": 2, "num_heads": 4, "mlp_ratio": 2.0, "wr_heads": 2, "wr_dim": 8, "token_dim": 32}


def test_architecture_keys_reach_the_network_and_zero_keeps_its_own():
    config, _ = load_config(["--config_path", str(CONFIG)])
    options = model_options(config)
    assert {key: options[key] for key in SMALL} == SMALL
    assert options["image_size"] == 32 and options["num_classes"] == 10
    recipe, _ = load_config(["--config_path", str(REPO_ROOT / "config" / "deit_small_dropcov_config.yaml"),
                             "--depth", "3"])
    options = model_options(recipe)
    assert options["depth"] == 3 and not (set(SMALL) - {"depth"}) & set(options)  # 0: the network's own
    with pytest.raises(DropCovError, match=r"depth=2 does not apply to net_name resnet18"):
        load_config(["--config_path", str(REPO_ROOT / "config" / "digits_demo_cpu.yaml"), "--depth", "2"])


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> Path:
    pytest.importorskip("sklearn")
    from src.data.digits import build_digits_imagefolder

    root = tmp_path_factory.mktemp("digits32")
    build_digits_imagefolder(str(root), size=32, val_fraction=0.2, seed=0)
    return root


def records(output: Path) -> list[dict]:
    return [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines() if line.strip()]


@pytest.mark.slow
def test_small_transformer_trains_on_digits_resumes_evaluates_and_exports(digits, tmp_path):
    import mindspore as ms

    from src.engine.export import load_exported
    from src.models import create_model_from_config
    from src.models.weights import load_network_weights
    from src.runtime.checkpoint import load_checkpoint_file, read_extra

    output = tmp_path / "run"
    train_args = ["--config_path", str(CONFIG), "--data_path", str(digits), "--output_path", str(output),
                  "--run_eval", "False", "--log_interval", "10"]
    epochs, steps = 6, 1437 // 16  # 1,437 training digits in batches of 16, the last partial one dropped

    log = tmp_path / "train.out"
    process = start_train(train_args, log)
    wait_for(lambda: f"epoch 3/{epochs} step 40/{steps}" in log.read_text(), process, 400, "epoch 3 step 40")
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=120) == 0, log.read_text()[-3000:]
    stopped_at = int(re.search(r"stopped by SIGTERM at global step (\d+)", log.read_text()).group(1))
    assert 2 * steps + 40 <= stopped_at < 3 * steps

    resumed = run_train([*train_args, "--resume", "auto"], timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert f"and {stopped_at} steps done" in resumed.stdout
    (final,) = (output / "checkpoints").glob(f"*-{epochs}_{epochs * steps}.ckpt")
    params = load_checkpoint_file(final)
    assert read_extra(params, "epoch_num") == epochs and read_extra(params, "global_step") == epochs * steps
    history = records(output)
    logged = [record["global_step"] for record in history if record["kind"] == "step"]
    assert logged == sorted(set(logged)) and logged[-1] == epochs * steps  # each logged step once, in order
    assert [record["global_step"] for record in history if record["kind"] == "resume"] == [stopped_at]

    evaluation = run("eval.py", "--config_path", CONFIG, "--data_path", digits, "--checkpoint_file_path", final,
                     "--output_path", tmp_path / "eval", timeout=300)
    assert evaluation.returncode == 0, evaluation.stderr[-3000:]
    scores = json.loads((tmp_path / "eval" / "eval_results.json").read_text())
    assert scores["count"] == 360
    assert scores["top1"] >= 0.90, scores

    exported = run("export.py", "--config_path", CONFIG, "--checkpoint_file_path", final, "--file_name",
                   tmp_path / "small_vit", "--batch_size", 4, timeout=300)
    assert exported.returncode == 0, exported.stderr[-3000:]
    config, _ = load_config(["--config_path", str(CONFIG)])
    net = create_model_from_config(config)  # MindSpore's own cells
    load_network_weights(net, params, strict=True, source=str(final))
    net.set_train(False)
    images = ms.Tensor(np.random.default_rng(0).standard_normal((4, 3, 32, 32)).astype(np.float32))
    expected = net(images).asnumpy()
    got = load_exported(tmp_path / "small_vit.mindir")(images).asnumpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
