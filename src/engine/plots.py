"""Training curves as a PNG: loss, learning rate and validation top-1 against epoch (matplotlib, Agg)."""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Dict, List, Union

from src.engine.metrics import latest_per_epoch, read_metrics

logger = logging.getLogger(__name__)


def _step_points(records: List[Dict[str, Any]], steps_per_epoch: int) -> List[Dict[str, Any]]:
    """Step records as (fractional epoch, loss, lr), keeping the last record of each global step."""
    by_step: Dict[int, Dict[str, Any]] = {}
    for record in records:
        if record.get("kind") == "step" and record.get("loss") is not None:
            by_step[int(record["global_step"])] = record
    return [{"x": step / steps_per_epoch, "loss": rec["loss"], "lr": rec.get("lr")}
            for step, rec in sorted(by_step.items())]


def plot_training_curves(metrics: Union[str, os.PathLike, List[Dict[str, Any]]],
                         png_path: Union[str, os.PathLike], steps_per_epoch: int | None = None,
                         title: str = "") -> Path | None:
    """Draw ``metrics.jsonl`` (a path or its records) into ``png_path``; returns the path, or None.

    Three panels sharing the epoch axis: training loss (per logged step, and the epoch mean), learning
    rate, and validation top-1 / top-5 (%, when evaluation ran). Epoch ``e`` ends at x = ``e``. A resumed
    run's re-done epochs replace the earlier records. The PNG is written atomically (temporary file,
    then rename). Returns None when there is nothing to draw yet.
    """
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    records = read_metrics(metrics) if isinstance(metrics, (str, os.PathLike)) else list(metrics)
    epochs = latest_per_epoch(records, "epoch")
    evals = latest_per_epoch(records, "eval")
    if not epochs and not evals:
        return None
    if steps_per_epoch is None and epochs and epochs[0].get("global_step"):
        steps_per_epoch = max(int(epochs[0]["global_step"]) // int(epochs[0]["epoch"]), 1)
    steps = _step_points(records, steps_per_epoch) if steps_per_epoch else []

    figure, (loss_axis, lr_axis, top1_axis) = plt.subplots(3, 1, figsize=(7, 8), sharex=True)
    if steps:
        loss_axis.plot([p["x"] for p in steps], [p["loss"] for p in steps], color="0.7", lw=1,
                       label="logged steps")
    if epochs:
        loss_axis.plot([r["epoch"] for r in epochs], [r["loss"] for r in epochs], "o-", label="epoch mean")
    loss_axis.set_ylabel("training loss")
    loss_axis.legend(loc="upper right", fontsize="small")
    loss_axis.grid(alpha=0.3)

    lr_points = [(p["x"], p["lr"]) for p in steps if p.get("lr") is not None]
    if not lr_points:
        lr_points = [(r["epoch"], r["lr"]) for r in epochs if r.get("lr") is not None]
    if lr_points:
        lr_axis.plot([x for x, _ in lr_points], [y for _, y in lr_points], "-", color="tab:green")
    lr_axis.set_ylabel("learning rate")
    lr_axis.grid(alpha=0.3)

    if evals:
        top1_axis.plot([r["epoch"] for r in evals], [100 * r["top1"] for r in evals], "o-", label="top-1")
        top1_axis.plot([r["epoch"] for r in evals], [100 * r["top5"] for r in evals], "s--", alpha=0.6,
                       label="top-5")
        best = max(evals, key=lambda r: r["top1"])
        top1_axis.annotate(f"best {100 * best['top1']:.2f}%", (best["epoch"], 100 * best["top1"]),
                           textcoords="offset points", xytext=(0, -14), ha="center", fontsize="small")
        top1_axis.legend(loc="lower right", fontsize="small")
    else:
        top1_axis.text(0.5, 0.5, "no evaluation (run_eval: False)", ha="center", va="center",
                       transform=top1_axis.transAxes, color="0.5")
    top1_axis.set_ylabel("val accuracy (%)")
    top1_axis.set_xlabel("epoch")
    top1_axis.grid(alpha=0.3)
    if title:
        figure.suptitle(title)
    figure.tight_layout()

    png_path = Path(png_path)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    partial = png_path.with_name(f".{png_path.stem}.{os.getpid()}.partial.png")
    try:
        figure.savefig(partial, dpi=100)
        os.replace(partial, png_path)
    finally:
        plt.close(figure)
        if partial.exists():
            partial.unlink()
    return png_path
