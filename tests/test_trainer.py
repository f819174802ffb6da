"""The training engine in-process: train step (AMP), loop, NaN stop, stop request, exact resume, evaluation,
metrics, plots, logging and signals. A tiny dense network keeps most tests to a second or two."""
from __future__ import annotations

import json
import logging
import os
import signal
from dataclasses import dataclass

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor, nn
from mindspore.dataset import NumpySlicesDataset

from src.config import config_differences
from src.engine.evaluate import evaluate
from src.engine.loss import create_loss
from src.engine.lr_schedule import create_lr_schedule
from src.engine.metrics import MetricsWriter, ThroughputMeter, format_duration, latest_per_epoch, read_metrics
from src.engine.optimizer import create_loss_scale_manager, create_optimizer, optimizer_loss_scale
from src.engine.plots import plot_training_curves
from src.engine.resume import TrainState, restore_training_state
from src.engine.train_settings import TrainSettings, batch_stream
from src.engine.train_step import build_train_step
from src.engine.trainer import Trainer
from src.errors import DropCovError
from src.runtime.checkpoint import CheckpointManager, load_checkpoint_file, read_extra
from src.runtime.files import ensure_writable_directory
from src.runtime.log import setup_logging
from src.runtime.signals import StopRequest

NUM_CLASSES = 4
BATCH = 4
SIZE = 4  # 3 x 4 x 4 inputs


class TinyNet(nn.Cell):
    """Flatten + Dense: a classifier with an ``fc`` like the ResNets, compiled in a second."""

    def __init__(self) -> None:
        super().__init__()
        self.flatten = nn.Flatten()
        self.fc = nn.Dense(3 * SIZE * SIZE, NUM_CLASSES)

    def construct(self, x):
        return self.fc(self.flatten(x))


@dataclass
class Bundle:
    dataset: object
    num_images: int
    total_images: int
    class_names: list
    steps_per_epoch: int


def make_bundle(num_images: int = 16, seed: int = 0, repeat_first_batch: bool = False) -> Bundle:
    rng = np.random.default_rng(seed)
    images = rng.standard_normal((num_images, 3, SIZE, SIZE)).astype(np.float32)
    labels = rng.integers(0, NUM_CLASSES, num_images).astype(np.int32)
    if repeat_first_batch:  # every batch identical: the data order cannot matter
        images[:] = np.tile(images[:BATCH], (num_images // BATCH, 1, 1, 1))
        labels[:] = np.tile(labels[:BATCH], num_images // BATCH)
    dataset = NumpySlicesDataset((images, labels), column_names=["image", "label"], shuffle=False)
    return Bundle(dataset.batch(BATCH, drop_remainder=True), num_images, num_images,
                  [str(i) for i in range(NUM_CLASSES)], num_images // BATCH)


def make_training(lr_schedule: np.ndarray, seed: int = 1):
    ms.set_seed(seed)
    net = TinyNet()
    optimizer = create_optimizer(net, "Momentum", lr_schedule, 0.9, 1e-4, optimizer_loss_scale("fixed", 1.0))
    train_step = build_train_step(net, create_loss(NUM_CLASSES, 0.1), optimizer, "O0",
                                  create_loss_scale_manager("fixed", 1.0))
    return net, optimizer, train_step


def settings_for(bundle: Bundle, epochs: int, **kwargs) -> TrainSettings:
    return TrainSettings(epochs=epochs, steps_per_epoch=bundle.steps_per_epoch, batch_size=BATCH, **kwargs)


class StopAfter:
    """A stop request that turns on after ``checks`` polls (the loop polls once per step)."""

    def __init__(self, checks: int) -> None:
        self.checks, self.signal_name = checks, None

    @property
    def requested(self) -> bool:
        self.checks -= 1
        if self.checks < 0 and self.signal_name is None:
            self.signal_name = "SIGTERM"
        return self.signal_name is not None

    def request(self, name: str) -> None:
        self.signal_name = name


# ---------------------------------------------------------------------------------------------- train step
@pytest.mark.slow
def test_amp_o2_step_is_finite_and_keeps_covariance_float32():
    from src.models import create_model

    ms.set_seed(1)
    net = create_model("resnet18", num_classes=NUM_CLASSES, head="dropcov")
    optimizer = create_optimizer(net, "Momentum", np.full(4, 0.01, np.float32), 0.9, 1e-4,
                                 optimizer_loss_scale("fixed", 1024.0))
    assert optimizer.loss_scale == 1024.0
    train_step = build_train_step(net, create_loss(NUM_CLASSES, 0.1), optimizer, "O2",
                                  create_loss_scale_manager("fixed", 1024.0))
    marked = [cell for name, cell in net.cells_and_names() if name.endswith("representation")]
    assert marked and all(cell.get_flags().get("fp32") and not cell.get_flags().get("fp16") for cell in marked)
    assert net.backbone.conv1.get_flags().get("fp16")  # the rest of the network does run in float16
    rng = np.random.default_rng(0)
    images = Tensor(rng.standard_normal((2, 3, 32, 32)).astype(np.float32))
    labels = Tensor(np.array([0, 3], np.int32))
    loss = train_step(images, labels)
    assert loss.dtype == ms.float32 and np.isfinite(loss.asnumpy())
    assert int(optimizer.global_step.asnumpy()[0]) == 1
    net.set_train(False)
    assert np.isfinite(net(images).asnumpy()).all()


def test_mindspore_itself_refuses_a_dynamic_loss_scale_on_cpu():
    """build_train_step refuses it up front because MindSpore cannot do it: if an upgrade can, this fails
    and the refusal should go."""
    net = TinyNet()
    optimizer = create_optimizer(net, "Momentum", 0.1, 0.9, 0.0, optimizer_loss_scale("dynamic", 1024.0))
    with pytest.raises(ValueError, match="CPU"):
        ms.amp.build_train_network(net, optimizer, create_loss(NUM_CLASSES), level="O2",
                                   loss_scale_manager=create_loss_scale_manager("dynamic", 1024.0))


def test_dynamic_loss_scale_on_cpu_is_a_clear_error():
    net = TinyNet()
    optimizer = create_optimizer(net, "Momentum", 0.1, 0.9, 0.0, optimizer_loss_scale("dynamic", 1024.0))
    with pytest.raises(DropCovError, match="loss_scale_type fixed"):
        build_train_step(net, create_loss(NUM_CLASSES), optimizer, "O2", create_loss_scale_manager("dynamic", 1024.0))


def test_batch_stream_crosses_dataset_epochs():
    bundle = make_bundle(12)  # 3 batches per dataset epoch
    first_labels = [batch[1].asnumpy().tolist() for batch in batch_stream(bundle.dataset, 7, 3)]
    assert len(first_labels) == 7
    assert first_labels[3] == first_labels[0] and first_labels[6] == first_labels[0]  # no shuffle: repeats


# ------------------------------------------------------------------------------------------------ the loop
def test_fit_checkpoints_keep_max_best_metrics_and_plot(tmp_path):
    bundle, val = make_bundle(16), make_bundle(12, seed=1)
    schedule = create_lr_schedule("cosine", 0.0, 0.1, 0.0, 0, 3, bundle.steps_per_epoch)
    net, optimizer, train_step = make_training(schedule)
    manager = CheckpointManager(tmp_path / "ckpt", "tiny", keep_max=2)
    metrics = MetricsWriter(tmp_path / "metrics.jsonl")
    settings = settings_for(bundle, 3, log_interval=2, run_eval=True)
    trainer = Trainer(train_step, net, settings, schedule, checkpoints=manager, metrics=metrics,
                      plot_path=tmp_path / "metrics.png", checkpoint_extra={"config": "x: 1\n", "steps_per_epoch": 4})
    result = trainer.fit(bundle, state=None, eval_bundle=val)
    assert result.state.epoch == 3 and result.state.global_step == 12 and result.stopped_by is None
    assert [p.name for p in manager.periodic_checkpoints()] == ["tiny-2_8.ckpt", "tiny-3_12.ckpt"]
    assert (tmp_path / "ckpt" / "best.ckpt").is_file()
    params = load_checkpoint_file(tmp_path / "ckpt" / "tiny-3_12.ckpt")
    assert read_extra(params, "epoch_num") == 3 and read_extra(params, "global_step") == 12
    assert read_extra(params, "config") == "x: 1\n" and "moments.fc.weight" in params
    np.testing.assert_array_equal(params["fc.weight"].asnumpy(), net.fc.weight.asnumpy())
    records = read_metrics(tmp_path / "metrics.jsonl")
    kinds = [r["kind"] for r in records]
    assert kinds.count("step") == 6 and kinds.count("epoch") == 3 and kinds.count("eval") == 3
    assert kinds[0] == "start" and kinds[-1] == "end"
    steps = [r for r in records if r["kind"] == "step"]
    assert [r["global_step"] for r in steps] == [2, 4, 6, 8, 10, 12]
    assert steps[-1]["lr"] == pytest.approx(float(schedule[11]))
    evals = latest_per_epoch(records, "eval")
    assert all(r["count"] == 12 for r in evals)
    best = read_extra(load_checkpoint_file(tmp_path / "ckpt" / "best.ckpt"), "best_metric")
    assert best == pytest.approx(max(r["top1"] for r in evals))
    assert (tmp_path / "metrics.png").read_bytes()[:4] == b"\x89PNG"


def test_nan_loss_stops_naming_the_step_and_keeps_last_good_checkpoint(tmp_path):
    bundle = make_bundle(16)
    # epoch 1 at lr 0.1, then x1e30: the first update of epoch 2 blows the weights up
    schedule = create_lr_schedule("multistep", 0.0, 0.1, 0.0, 0, 3, bundle.steps_per_epoch, [1], 1e30)
    net, _, train_step = make_training(schedule)
    manager = CheckpointManager(tmp_path / "ckpt", "tiny", keep_max=5)
    settings = settings_for(bundle, 3, log_interval=100)
    with pytest.raises(DropCovError) as error:
        Trainer(train_step, net, settings, schedule, checkpoints=manager,
                metrics=MetricsWriter(tmp_path / "m.jsonl")).fit(bundle)
    message = str(error.value)
    # the same run read step by step: the first non-finite loss is the one the message names
    net_again, _, step_again = make_training(schedule)
    losses = [float(step_again(*batch[:2]).asnumpy()) for batch in batch_stream(bundle.dataset, 12, 4)]
    first_bad = int(np.flatnonzero(~np.isfinite(losses))[0]) + 1
    assert first_bad > 5  # epoch 2: detected at the epoch end (log_interval 100), named exactly
    assert f"global step {first_bad} (epoch 2/3, step {first_bad - 4}/4)" in message, message
    assert "tiny-1_4.ckpt" in message and "\n" not in message
    assert [p.name for p in manager.periodic_checkpoints()] == ["tiny-1_4.ckpt"]
    params = load_checkpoint_file(tmp_path / "ckpt" / "tiny-1_4.ckpt")
    assert np.isfinite(params["fc.weight"].asnumpy()).all()


def test_stop_request_saves_the_exact_step_and_resume_matches_uninterrupted_run(tmp_path):
    bundle = make_bundle(16, repeat_first_batch=True)
    schedule = create_lr_schedule("linear", 0.01, 0.1, 0.0, 0.5, 3, bundle.steps_per_epoch)
    settings = settings_for(bundle, 3, log_interval=3)

    net, optimizer, train_step = make_training(schedule)
    reference = Trainer(train_step, net, settings, schedule).fit(bundle)
    reference_weights = net.fc.weight.asnumpy().copy()
    reference_moments = optimizer.moments[0].asnumpy().copy()

    net, optimizer, train_step = make_training(schedule)
    manager = CheckpointManager(tmp_path / "ckpt", "tiny", keep_max=5)
    stopped = Trainer(train_step, net, settings, schedule, checkpoints=manager,
                      checkpoint_extra={"steps_per_epoch": 4}, stop=StopAfter(6)).fit(bundle)
    assert stopped.stopped_by == "SIGTERM" and stopped.state.global_step == 7
    assert stopped.last_checkpoint.name == "tiny-1_7.ckpt"
    params = load_checkpoint_file(stopped.last_checkpoint)
    assert read_extra(params, "step_num") == 3 and read_extra(params, "global_step") == 7

    net, optimizer, train_step = make_training(schedule, seed=99)  # other initial weights: all restored
    state = restore_training_state(net, train_step, optimizer, params, "ckpt", 4, 12)
    assert (state.epoch, state.global_step) == (1, 7)
    assert int(optimizer.global_step.asnumpy()[0]) == 7
    resumed = Trainer(train_step, net, settings, schedule, checkpoints=manager,
                      checkpoint_extra={"steps_per_epoch": 4}).fit(bundle, state=state)
    assert (resumed.state.epoch, resumed.state.global_step) == (reference.state.epoch, reference.state.global_step)
    assert int(optimizer.global_step.asnumpy()[0]) == 12
    np.testing.assert_allclose(net.fc.weight.asnumpy(), reference_weights, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(optimizer.moments[0].asnumpy(), reference_moments, rtol=1e-6, atol=1e-7)


def test_resume_refuses_other_steps_per_epoch(tmp_path):
    bundle = make_bundle(16)
    schedule = create_lr_schedule("constant", 0.0, 0.1, 0.0, 0, 1, 4)
    net, optimizer, train_step = make_training(schedule)
    manager = CheckpointManager(tmp_path, "tiny")
    Trainer(train_step, net, settings_for(bundle, 1), schedule, checkpoints=manager,
            checkpoint_extra={"steps_per_epoch": 4}).fit(bundle)
    params = load_checkpoint_file(manager.periodic_checkpoints()[-1])
    with pytest.raises(DropCovError, match="4 steps per epoch but this run has 8"):
        restore_training_state(net, train_step, optimizer, params, "c.ckpt", 8, 80)
    with pytest.raises(DropCovError, match="past the 2 steps"):
        restore_training_state(net, train_step, optimizer, params, "c.ckpt", 4, 2)


def test_config_differences():
    saved = "lr_max: 0.1\nbatch_size: 32\nresume: ''\n"
    assert config_differences(saved, {"lr_max": 0.2, "batch_size": 32, "resume": "auto"}) == ["lr_max: 0.1 -> 0.2"]
    assert config_differences(None, {"lr_max": 0.2}) == []


# ---------------------------------------------------------------------------------------------- evaluation
def test_evaluate_matches_numpy():
    bundle = make_bundle(10)
    bundle.dataset = NumpySlicesDataset(
        (np.random.default_rng(3).standard_normal((10, 3, SIZE, SIZE)).astype(np.float32),
         np.arange(10, dtype=np.int32) % NUM_CLASSES), column_names=["image", "label"], shuffle=False).batch(4)
    net = TinyNet()
    scores = evaluate(net, bundle, top_k=2)
    images = np.concatenate([b[0].asnumpy() for b in bundle.dataset.create_tuple_iterator()])
    labels = np.arange(10) % NUM_CLASSES
    logits = images.reshape(10, -1) @ net.fc.weight.asnumpy().T + net.fc.bias.asnumpy()
    order = np.argsort(-logits, axis=1)
    shifted = logits - logits.max(1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
    assert scores["count"] == 10  # the last partial batch counts
    assert scores["top1"] == pytest.approx(np.mean(order[:, 0] == labels))
    assert scores["top5"] == pytest.approx(np.mean((order[:, :2] == labels[:, None]).any(1)))
    assert scores["loss"] == pytest.approx(-log_probs[np.arange(10), labels].mean(), rel=1e-5)
    bundle.num_images = 7  # a padded shard: only its first num_images samples count
    assert evaluate(net, bundle, top_k=2)["count"] == 7


# ------------------------------------------------------------------------------------ metrics, plots, logs
def test_throughput_meter_and_duration():
    now = [0.0]
    meter = ThroughputMeter(images_per_step=8, clock=lambda: now[0])
    meter.step(2)
    now[0] = 10.0  # first window: compilation
    assert meter.close_window() == pytest.approx(1.6)
    meter.step(4)
    now[0] = 12.0
    assert meter.close_window() == pytest.approx(16.0)
    assert meter.eta(10) == pytest.approx(5.0)  # steady pace only
    assert format_duration(3723) == "1:02:03" and format_duration(float("nan")) == "?"


def test_metrics_jsonl_and_plot(tmp_path):
    writer = MetricsWriter(tmp_path / "metrics.jsonl")
    writer.write("step", epoch=1, step=2, global_step=2, loss=np.float32(2.5), lr=0.1)
    writer.write("epoch", epoch=1, global_step=4, loss=float("nan"), lr=0.1)
    writer.write("eval", epoch=1, global_step=4, top1=0.5, top5=0.9, loss=1.0, count=10)
    writer.write("epoch", epoch=1, global_step=4, loss=2.0, lr=0.1)  # a resumed run re-did epoch 1
    with open(tmp_path / "metrics.jsonl", "a") as stream:
        stream.write('{"kind": "step", "epo')  # a line cut by SIGKILL
    records = read_metrics(tmp_path / "metrics.jsonl")
    assert len(records) == 4 and records[1]["loss"] is None
    assert latest_per_epoch(records, "epoch")[0]["loss"] == 2.0
    assert json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])["loss"] == 2.5
    png = plot_training_curves(tmp_path / "metrics.jsonl", tmp_path / "plot.png", steps_per_epoch=4)
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert plot_training_curves([], tmp_path / "none.png") is None
    MetricsWriter(tmp_path / "off.jsonl", enabled=False).write("step", loss=1.0)
    assert not (tmp_path / "off.jsonl").exists()


def test_setup_logging_rank0_file_other_ranks_warnings(tmp_path, capsys):
    log = logging.getLogger("src.test_trainer")
    path = setup_logging(tmp_path / "run", rank=0)
    log.info("hello from rank 0")
    assert path == tmp_path / "run" / "train.log" and "hello from rank 0" in path.read_text()
    assert setup_logging(tmp_path / "run1", rank=1) is None
    log.info("quiet info")
    log.warning("loud warning")
    out = capsys.readouterr().out
    assert "quiet info" not in out and "[rank 1] loud warning" in out
    assert not (tmp_path / "run1").exists()
    path = setup_logging(tmp_path / "run2", rank=1, all_ranks=True)
    log.info("verbose rank 1")
    assert path.name == "train_rank1.log" and "verbose rank 1" in path.read_text()
    setup_logging(None)


def test_unwritable_output_folder_is_one_line(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(DropCovError, match=r"output_path '.*a_file/out' cannot be written"):
        ensure_writable_directory(blocker / "out")


def test_stop_request_handles_sigterm_and_restores_handlers():
    before = signal.getsignal(signal.SIGTERM)
    with StopRequest() as stop:
        assert not stop.requested
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.requested and stop.signal_name == "SIGTERM" and stop.exit_status == 0
    assert signal.getsignal(signal.SIGTERM) == before
    interrupt = StopRequest()
    interrupt.request("SIGINT")
    assert interrupt.exit_status == 130


def test_train_state_defaults():
    assert TrainState() == TrainState(epoch=0, global_step=0, best_top1=None)
    settings = TrainSettings(epochs=5, steps_per_epoch=2, batch_size=1, save_checkpoint_epochs=2, run_eval=True,
                             eval_start_epoch=2, eval_interval=2)
    assert [e for e in range(1, 6) if settings.saves_at(e)] == [2, 4, 5]
    assert [e for e in range(1, 6) if settings.evaluates_at(e)] == [2, 4, 5]


# --------------------------------------------------------------------- the modern recipe in the loop
def make_recipe_training(lr_schedule: np.ndarray, seed: int = 1, **recipe):
    """TinyNet, Momentum and the recipe's train step (accumulation, EMA ...), as train.py builds them."""
    from src.engine.ema import ModelEma
    from src.engine.train_step import create_train_step

    ms.set_seed(seed)
    net = TinyNet()
    optimizer = create_optimizer(net, "Momentum", lr_schedule, 0.9, 1e-4, 1.0)
    if recipe.pop("ema", False):
        recipe["ema"] = ModelEma(net, decay=0.5)
    train_step = create_train_step(net, create_loss(NUM_CLASSES, 0.1), optimizer, "O0",
                                   create_loss_scale_manager("fixed", 1.0), **recipe)
    return net, optimizer, train_step


def test_accumulation_in_the_loop_counts_optimizer_steps_and_equals_the_big_batch(tmp_path):
    """2 batches of 4 per optimizer step train the weights 1 batch of 8 trains (TinyNet has no BatchNorm)."""
    micro = make_bundle(16)
    big = Bundle(NumpySlicesDataset(make_raw(16), column_names=["image", "label"], shuffle=False).batch(8),
                 16, 16, micro.class_names, 2)
    schedule = create_lr_schedule("cosine", 0.0, 0.1, 0.0, 0, 2, 2)
    net, optimizer, train_step = make_recipe_training(schedule, accumulation_steps=2)
    settings = TrainSettings(epochs=2, steps_per_epoch=2, batch_size=BATCH, log_interval=1, accumulation_steps=2)
    trainer = Trainer(train_step, net, settings, schedule, metrics=MetricsWriter(tmp_path / "m.jsonl"))
    assert trainer.images_per_step == 8
    result = trainer.fit(micro)
    assert result.state.global_step == 4 and int(optimizer.global_step.asnumpy()[0]) == 4

    net_big, _, step_big = make_training(schedule)
    settings_big = TrainSettings(epochs=2, steps_per_epoch=2, batch_size=8, log_interval=1)
    Trainer(step_big, net_big, settings_big, schedule, metrics=MetricsWriter(tmp_path / "b.jsonl")).fit(big)
    np.testing.assert_allclose(net.fc.weight.asnumpy(), net_big.fc.weight.asnumpy(), rtol=1e-5, atol=1e-6)
    losses = [r["loss"] for r in read_metrics(tmp_path / "m.jsonl") if r["kind"] == "step"]
    big_losses = [r["loss"] for r in read_metrics(tmp_path / "b.jsonl") if r["kind"] == "step"]
    np.testing.assert_allclose(losses, big_losses, rtol=1e-5)  # the logged loss is the mean of the batches'


def make_raw(num_images: int, seed: int = 0):
    """The images and labels of :func:`make_bundle` (same seed, same order)."""
    rng = np.random.default_rng(seed)
    images = rng.standard_normal((num_images, 3, SIZE, SIZE)).astype(np.float32)
    return images, rng.integers(0, NUM_CLASSES, num_images).astype(np.int32)


def test_ema_is_scored_next_to_the_raw_weights_and_best_ckpt_names_the_winner(tmp_path):
    from src.models.ema_weights import BEST_WEIGHTS_ENTRY

    bundle, val = make_bundle(16), make_bundle(12, seed=1)
    schedule = create_lr_schedule("constant", 0.0, 0.5, 0.0, 0, 4, bundle.steps_per_epoch)
    net, _, train_step = make_recipe_training(schedule, ema=True)
    manager = CheckpointManager(tmp_path / "ckpt", "tiny", keep_max=5)
    settings = settings_for(bundle, 4, log_interval=4, run_eval=True)
    Trainer(train_step, net, settings, schedule, checkpoints=manager,
            metrics=MetricsWriter(tmp_path / "metrics.jsonl")).fit(bundle, eval_bundle=val)
    evals = latest_per_epoch(read_metrics(tmp_path / "metrics.jsonl"), "eval")
    assert len(evals) == 4 and all("top1_ema" in r and "top5_ema" in r for r in evals)
    best_score, best_source = None, None
    for record in evals:  # raw first: a tie goes to the raw weights
        for source, score in (("raw", record["top1"]), ("ema", record["top1_ema"])):
            if best_score is None or score > best_score:
                best_score, best_source = score, source
    best = load_checkpoint_file(tmp_path / "ckpt" / "best.ckpt")
    assert read_extra(best, "best_metric") == pytest.approx(best_score)
    assert read_extra(best, BEST_WEIGHTS_ENTRY) == best_source
    last = load_checkpoint_file(tmp_path / "ckpt" / "tiny-4_16.ckpt")
    assert BEST_WEIGHTS_ENTRY not in last  # only best.ckpt says which weights scored
    np.testing.assert_array_equal(last["fc.weight"].asnumpy(), net.fc.weight.asnumpy())  # raw weights back
    np.testing.assert_array_equal(last["ema.fc.weight"].asnumpy(), train_step.ema.averages[0].asnumpy())
    assert not np.array_equal(last["ema.fc.weight"].asnumpy(), last["fc.weight"].asnumpy())


def test_resume_restores_the_ema_and_starts_one_from_a_checkpoint_without_it(tmp_path, caplog):
    bundle = make_bundle(16)
    schedule = create_lr_schedule("constant", 0.0, 0.3, 0.0, 0, 2, bundle.steps_per_epoch)
    net, _, train_step = make_recipe_training(schedule, ema=True)
    manager = CheckpointManager(tmp_path / "ckpt", "tiny")
    Trainer(train_step, net, settings_for(bundle, 1, log_interval=4), schedule, checkpoints=manager).fit(bundle)
    params = load_checkpoint_file(manager.periodic_checkpoints()[-1])

    net2, optimizer2, step2 = make_recipe_training(schedule, seed=9, ema=True)
    state = restore_training_state(net2, step2, optimizer2, params, "ema.ckpt", bundle.steps_per_epoch, 8)
    assert state.global_step == 4
    for average, restored in zip(train_step.ema.averages, step2.ema.averages):
        np.testing.assert_array_equal(restored.asnumpy(), average.asnumpy())
    assert int(step2.ema.num_updates.asnumpy()) == 4

    without_ema = {name: value for name, value in params.items() if not name.startswith("ema")}
    net3, optimizer3, step3 = make_recipe_training(schedule, seed=9, ema=True)
    with caplog.at_level(logging.WARNING):
        restore_training_state(net3, step3, optimizer3, without_ema, "plain.ckpt", bundle.steps_per_epoch, 8)
    assert "plain.ckpt holds no model EMA" in caplog.text
    np.testing.assert_array_equal(step3.ema.averages[0].asnumpy(), net3.fc.weight.asnumpy())
