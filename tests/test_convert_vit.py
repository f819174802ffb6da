"""The authors' PyTorch transformer checkpoints -> MindSpore: name map, their checkpoint layouts, and logits.

The PyTorch side is torch_reference/vit.py; checkpoints are saved as the authors' training code
(timm 0.4.12's CheckpointSaver) saves them: ``state_dict``, ``state_dict_ema``, ``optimizer``,
``amp_scaler``, ``args`` (an argparse.Namespace), ``epoch``, ``arch``, ``version``, ``metric``.
"""
from __future__ import annotations

import argparse

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import mindspore as ms  # noqa: E402
from readme_helpers import assert_eval_results_equal_pytorch, readme_commands, resize_256_crop_224_batch  # noqa: E402

from src.errors import DropCovError  # noqa: E402
from src.models import create_model  # noqa: E402
from src.models.vit_mapping import convert_vit_state_dict, vit_mindspore_name, vit_net_names  # noqa: E402
from torch_reference.vit import build_reference, randomise  # noqa: E402

TINY = {"depth": 2}


@pytest.mark.parametrize("torch_name, expected", [
    ("cls_token", "cls_token"),
    ("pos_embed", None),
    ("visual_tokens.tokens.stem.0.weight", "visual_tokens.tokens.stem.0.weight"),
    ("visual_tokens.tokens.stage.0.denselayer6.conv2.weight", "visual_tokens.tokens.stage.0.denselayer6.conv2.weight"),
    ("visual_tokens.tokens.stage.3.norm.running_var", "visual_tokens.tokens.stage.3.norm.moving_variance"),
    ("visual_tokens.tokens.stage.5.norm.weight", "visual_tokens.tokens.stage.5.norm.gamma"),
    ("visual_tokens.tokens.stage.1.norm.num_batches_tracked", None),
    ("blocks.11.norm2.bias", "blocks.11.norm2.beta"),
    ("blocks.0.attn.qkv.weight", "blocks.0.attn.qkv.weight"),
    ("norm.weight", "norm.gamma"),
    ("classifier.representation.wr.weight", "classifier.representation.wr.weight"),
    ("classifier.visual_fc.bias", "classifier.visual_fc.bias"),
])
def test_vit_mindspore_name(torch_name, expected):
    assert vit_mindspore_name(torch_name) == expected


@pytest.mark.slow
@pytest.mark.parametrize("net_name", vit_net_names())
def test_every_key_of_the_full_networks_lands_on_a_parameter(net_name):
    """The full-size state dicts (1000 classes, 224x224) cover every MindSpore parameter, shapes equal."""
    backbone = net_name.removesuffix("_dropcov").removesuffix("_cls")
    state_dict = build_reference(backbone, representation=net_name.endswith("_dropcov")).state_dict()
    network = create_model(net_name)
    shapes = {p.name: tuple(p.shape) for p in network.get_parameters()}
    converted = convert_vit_state_dict({"module." + k: v for k, v in state_dict.items()}, net_name, shapes)
    assert list(converted) == list(shapes)
    skipped = [k for k in state_dict if vit_mindspore_name(k) is None]
    assert skipped == ["pos_embed"] + [k for k in state_dict if k.endswith("num_batches_tracked")]
    assert len(converted) + len(skipped) == len(state_dict)


def test_mapping_errors_are_one_line():
    state_dict = build_reference("deit_small", **TINY).state_dict()
    network = create_model("deit_small_dropcov", **TINY)
    shapes = {p.name: tuple(p.shape) for p in network.get_parameters()}
    wrong_positions = dict(state_dict, pos_embed=state_dict["pos_embed"] + 0.1)
    with pytest.raises(DropCovError, match=r"x.pth: pos_embed differs from the fixed sinusoid table"):
        convert_vit_state_dict(wrong_positions, "deit_small_dropcov", shapes, source="x.pth")
    deeper = create_model("deit_small_dropcov", depth=3)
    deeper_shapes = {p.name: tuple(p.shape) for p in deeper.get_parameters()}
    with pytest.raises(DropCovError, match=r"11 parameter\(s\) of deit_small_dropcov missing.*blocks\.2\.norm1\.gamma"):
        convert_vit_state_dict(state_dict, "deit_small_dropcov", deeper_shapes)
    other_classes = {p.name: tuple(p.shape) for p in create_model("deit_small_dropcov", num_classes=10,
                                                                   **TINY).get_parameters()}
    with pytest.raises(DropCovError, match=r"classifier.visual_fc.weight has shape \(1000, 3456\).*class_num") as caught:
        convert_vit_state_dict(state_dict, "deit_small_dropcov", other_classes)
    assert "\n" not in str(caught.value)


def authors_training_checkpoint(model: torch.nn.Module, ema: torch.nn.Module, wrapped: bool) -> dict:
    """What timm 0.4.12's CheckpointSaver writes in the authors' main.py (DDP-unwrapped, or not)."""
    def weights(module: torch.nn.Module) -> dict:
        return {("module." if wrapped else "") + k: v for k, v in module.state_dict().items()}

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.03)
    return {"epoch": 299, "arch": "Deit_drop_Small", "state_dict": weights(model),
            "optimizer": optimizer.state_dict(), "version": 2,
            "args": argparse.Namespace(model="Deit_drop_Small", lr=1e-3, weight_decay=0.03, model_ema=True,
                                       scale=[0.08, 1.0], img_size=224),
            "amp_scaler": {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000,
                           "_growth_tracker": 17},
            "state_dict_ema": weights(ema), "metric": 82.4}


def mindspore_logits(checkpoint, net_name: str, num_classes: int, image_size: int, x: np.ndarray,
                     **options) -> np.ndarray:
    network = create_model(net_name, num_classes=num_classes, image_size=image_size, **options)
    not_loaded, unused = ms.load_param_into_net(network, ms.load_checkpoint(str(checkpoint)))
    assert not not_loaded and not unused, (not_loaded, unused)
    network.set_train(False)
    return network(ms.Tensor(x)).asnumpy()


@pytest.mark.slow
def test_authors_training_checkpoint_converts_to_their_logits(tmp_path):
    """The full DeiT-S + DropCov (12 blocks, 112x112 keeps its 14 x 14 tokens): EMA weights by default."""
    from src.tools.convert_torch import main

    model = randomise(build_reference("deit_small", num_classes=10, img_size=112), seed=1).eval()
    ema = randomise(build_reference("deit_small", num_classes=10, img_size=112), seed=2).eval()
    path = tmp_path / "model_best.pth.tar"
    torch.save(authors_training_checkpoint(model, ema, wrapped=False), path)
    output = tmp_path / "deit_small_dropcov.ckpt"
    assert main(["--net_name", "deit_small_dropcov", str(path), str(output)]) == 0

    x = np.random.default_rng(3).standard_normal((2, 3, 112, 112)).astype(np.float32)
    with torch.no_grad():
        expected = ema(torch.from_numpy(x)).numpy()
    actual = mindspore_logits(output, "deit_small_dropcov", 10, 112, x)
    difference = float(np.max(np.abs(actual - expected)) / np.max(np.abs(expected)))
    print(f"converted training checkpoint: relative logit difference {difference:.2e}")
    assert difference < 1e-4


@pytest.mark.parametrize("use_ema, wrapped", [(True, False), (False, True)])
def test_training_checkpoint_weights_are_picked_by_use_ema(tmp_path, use_ema, wrapped):
    """``state_dict_ema`` when asked and present, else ``state_dict``; ``args`` (a Namespace) does not stop
    ``weights_only`` loading."""
    from src.models.torch_mapping import strip_wrapper_prefix
    from src.tools.convert_torch import load_torch_state_dict

    model = randomise(build_reference("deit_small", num_classes=3, img_size=64, **TINY), seed=6)
    ema = randomise(build_reference("deit_small", num_classes=3, img_size=64, **TINY), seed=7)
    path = tmp_path / "checkpoint.pth.tar"
    torch.save(authors_training_checkpoint(model, ema, wrapped), path)
    loaded = strip_wrapper_prefix(load_torch_state_dict(path, use_ema=use_ema))
    chosen = (ema if use_ema else model).state_dict()
    assert list(loaded) == list(chosen)
    assert all(torch.equal(loaded[name], chosen[name]) for name in chosen)


def test_baseline_state_dict_maps_and_gives_its_logits(tmp_path):
    from src.tools.convert_torch import convert_checkpoint

    reference = randomise(build_reference("t2t_vit_14", num_classes=7, img_size=64, representation=False,
                                          **TINY), seed=4).eval()
    path = tmp_path / "t2t.pth"
    torch.save(reference.state_dict(), path)
    with pytest.raises(DropCovError, match="has no DropCov head.*use --net_name t2t_vit_14_cls$"):
        convert_checkpoint(path, tmp_path / "x.ckpt", "t2t_vit_14_dropcov")
    network = create_model("t2t_vit_14_cls", num_classes=7, image_size=64, **TINY)
    shapes = {p.name: tuple(p.shape) for p in network.get_parameters()}
    parameters = convert_vit_state_dict(reference.state_dict(), "t2t_vit_14_cls", shapes)
    ms.load_param_into_net(network, {name: ms.Parameter(ms.Tensor(value), name=name)
                                     for name, value in parameters.items()})
    network.set_train(False)
    x = np.random.default_rng(5).standard_normal((1, 3, 64, 64)).astype(np.float32)
    with torch.no_grad():
        expected = reference(torch.from_numpy(x)).numpy()
    actual = network(ms.Tensor(x)).asnumpy()
    assert float(np.max(np.abs(actual - expected)) / np.max(np.abs(expected))) < 1e-4


def test_cli_refuses_cov_dim_for_a_transformer(tmp_path, capsys):
    from src.tools.convert_torch import main

    path = tmp_path / "in.pth"
    torch.save({"state_dict": {}}, path)
    assert main(["--net_name", "deit_small_dropcov", "--cov_dim", "256", str(path), str(tmp_path / "o.ckpt")]) == 2
    error = capsys.readouterr().err
    assert "cov_dim does not apply to deit_small_dropcov" in error and error.count("\n") == 1


# --------------------------------------------------------------------------- README's transformer commands
@pytest.mark.slow
def test_readme_commands_convert_and_evaluate_deit_small(repo_root, tmp_path):
    """README's convert + eval commands for DeiT-S + DropCov (on CPU) with a training checkpoint as the authors'
    code saves it: eval.py's mean cross entropy and top-1 equal their network's (EMA weights) on the same
    images, preprocessed as timm does."""
    import json
    import os
    import shlex
    import subprocess
    import sys

    from PIL import Image

    commands = readme_commands("### The authors' transformers")
    assert len(commands) == 2 and "src.tools.convert_torch" in commands[0] and "eval.py" in commands[1]
    pth, ckpt, data = tmp_path / "deit_small_dropcov.pth", tmp_path / "deit_small_dropcov.ckpt", tmp_path / "imagenet"
    model = randomise(build_reference("deit_small"), seed=21).eval()
    ema = randomise(build_reference("deit_small"), seed=22).eval()
    torch.save(authors_training_checkpoint(model, ema, wrapped=True), pth)
    rng = np.random.default_rng(23)
    files, labels = [], []
    for label, (height, width) in enumerate([(300, 260), (260, 333)]):
        for index in range(2):
            path = data / "val" / f"n0{label}" / f"{index}.JPEG"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (height + 9 * index, width, 3), dtype=np.uint8)).save(path, quality=90)
            files.append(path)
            labels.append(label)

    env = dict(os.environ)
    env.pop("ONEDNN_MAX_CPU_ISA", None)
    for command in commands:
        command = command.replace('--device_target="GPU"', '--device_target="CPU"').replace("IMAGENET", str(data))
        command = command.replace(" deit_small_dropcov.pth", f" {pth}").replace(" deit_small_dropcov.ckpt", f" {ckpt}")
        command = command.replace("=deit_small_dropcov.ckpt", f"={ckpt}")
        argv = shlex.split(command)
        assert argv[0] == "python"
        argv = [sys.executable] + argv[1:] + (["--output_path", str(tmp_path / "run")] if "eval.py" in command else [])
        result = subprocess.run(argv, cwd=repo_root, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, (command, result.stderr[-3000:])

    results = json.loads((tmp_path / "run" / "eval_results.json").read_text())
    assert results["count"] == 4
    with torch.no_grad():
        logits = ema(torch.from_numpy(resize_256_crop_224_batch(files, "bicubic"))).double()
    assert_eval_results_equal_pytorch(results, logits, labels, "DeiT-S + DropCov")
