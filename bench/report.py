"""Derived figures and target lines of a benchmark run (the tables are :mod:`bench.report_text`'s).

Everything here works on the plain results dict that :mod:`bench.run_all` writes as JSON, so a report
can be rebuilt from a saved file (``python bench/run_all.py --report bench/results/latest.json``).

MindSpore figures come per convolution backend (``conv_backend`` of each training entry; the head and
profile sections are ``{backend: result}``). Files written before the backends (schema 1: no
``conv_backend``, one head and one profile result) read as all ``stock``.
"""
from __future__ import annotations

from typing import Any, Iterable

HEAD_LABELS = {"dropcov": "DropCov (layer4 s1)", "gap": "GAP (layer4 s2)", "gap_s1": "GAP (layer4 s1)"}
TARGET_GRAPH_OVER_PYNATIVE = 1.6
TARGET_R18_IMAGES_PER_S = 9.3
TARGET_HEAD_SHARE = 0.05
#: conv_backend auto (our kernels on CPU) may be at most 3% slower than stock, in training and evaluation.
TARGET_AUTO_OVER_STOCK = 0.97
#: Evaluation with our kernels at least PyTorch's images/s on the same CPU.
TARGET_EVAL_OVER_PYTORCH = 1.0
CONV_DIRECTIONS = {"Conv2D": "forward", "Conv2DBackpropInput": "backward-data",
                   "Conv2DBackpropFilter": "backward-filter",
                   "Custom:dropcov_conv2d_forward": "forward", "Custom:dropcov_conv2d_backward_data": "backward-data",
                   "Custom:dropcov_conv2d_backward_filter": "backward-filter"}
BACKEND_ORDER = ("stock", "onednn")
KERNEL_ORDER = ("matmul", "conv1x1", "conv3x3")


# ------------------------------------------------------------------------------------------- lookups
def entry_backend(entry: dict) -> str:
    """The convolution backend of a training entry (``stock`` for files written before backends existed)."""
    return entry.get("conv_backend") or entry.get("conv_backend_requested") or "stock"


def train_backends(results: dict) -> list[str]:
    """The convolution backends of the training entries, stock first."""
    found = {entry_backend(entry) for entry in results.get("train", [])}
    return sorted(found, key=lambda name: (BACKEND_ORDER.index(name) if name in BACKEND_ORDER else len(BACKEND_ORDER),
                                           name))


def by_backend(section: dict | None) -> dict[str, dict]:
    """A per-backend section (head, profile) as ``{backend: result}``; a schema-1 single result is stock's."""
    if not section:
        return {}
    return {"stock": section} if "ok" in section else dict(section)


def find_train(results: dict, net: str, head: str, mode: str = "GRAPH_MODE",
               backend: str | None = "stock") -> dict | None:
    """The successful training entry for (net, head label, mode, convolution backend), or None.

    ``backend=None`` takes the fastest backend's entry (highest training images/s).
    """
    found = [entry for entry in results.get("train", [])
             if entry.get("ok") and entry.get("net_name") == net and entry.get("head_label") == head
             and entry.get("mode_name") == mode and (backend is None or entry_backend(entry) == backend)]
    if backend is None and found:
        return max(found, key=lambda entry: _images_per_s(entry) or 0.0)
    return found[0] if found else None


def _median(entry: dict | None, part: str = "train") -> float | None:
    return entry.get(part, {}).get("median_s") if entry else None


def _images_per_s(entry: dict | None, part: str = "train") -> float | None:
    return entry.get(part, {}).get("images_per_s") if entry else None


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}%"


def pytorch_run_name(results: dict) -> str:
    """The PyTorch run measured on the run's CPU kind: ``AVX2`` under ``--isa AVX2``, else ``default``."""
    return "AVX2" if (results.get("settings") or {}).get("isa") == "AVX2" else "default"


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    return numerator / denominator if numerator is not None and denominator else None


# ------------------------------------------------------------------------------------------- derived
def _backend_figures(results: dict, net: str, backend: str, head_run: dict | None) -> dict[str, Any]:
    """One net's figures with one convolution backend: GRAPH/PyNative ratios, head shares, images/s."""
    dropcov = find_train(results, net, "dropcov", backend=backend)
    gap_s1 = find_train(results, net, "gap_s1", backend=backend)
    figures: dict[str, Any] = {
        "dropcov_images_per_s": {mode: _images_per_s(find_train(results, net, "dropcov", mode, backend))
                                 for mode in ("GRAPH_MODE", "PYNATIVE_MODE")},
        "graph_over_pynative": {head: _ratio(_images_per_s(find_train(results, net, head, backend=backend)),
                                             _images_per_s(find_train(results, net, head, "PYNATIVE_MODE", backend)))
                                for head in HEAD_LABELS},
        "dropcov_over_gap_s1_step_share": (
            (_median(dropcov) - _median(gap_s1)) / _median(dropcov) if _median(dropcov) and _median(gap_s1)
            else None),
    }
    head_nets = ((head_run or {}).get("nets") or {}) if (head_run or {}).get("ok") else {}
    if net in head_nets and _median(dropcov):
        alone = {name: timing["median_s"] / _median(dropcov) for name, timing in head_nets[net]["whole"].items()}
        figures["head_alone_share"] = alone
        figures["head_alone_extra_share"] = (alone["dropcov"] - alone["gap"]
                                             if "dropcov" in alone and "gap" in alone else None)
    return figures


def derive(results: dict) -> dict[str, Any]:
    """Add to ``results``: each training figure's GFLOP/s and fraction of the best kernel, and per net
    ``backends`` (per convolution backend: GRAPH/PyNative ratios, head shares), ``best_backend`` (highest
    DropCov GRAPH images/s; its figures are repeated at the net's top level), onednn-over-stock speed-ups,
    ours (best backend) / PyTorch ratios; then the target lines. Returns the ``derived`` dict."""
    peak = (results.get("peak") or {}).get("best") or {}
    peak_gflops = peak.get("gflops")
    for entry in results.get("train", []):
        if not entry.get("ok"):
            continue
        median = _median(entry)
        entry["achieved_gflops"] = entry["train_gflop_per_step"] / median if median else None
        entry["peak_fraction"] = _ratio(entry["achieved_gflops"], peak_gflops)
    nets = sorted({entry.get("net_name") for entry in results.get("train", []) if entry.get("net_name")})
    backends = train_backends(results)
    heads = by_backend(results.get("head"))
    derived: dict[str, Any] = {"peak_gflops": peak_gflops, "backends": backends, "nets": {}}
    pytorch = results.get("pytorch") or {}
    for net in nets:
        figures = {backend: _backend_figures(results, net, backend, heads.get(backend)) for backend in backends}
        best_entry = find_train(results, net, "dropcov", backend=None)
        best = entry_backend(best_entry) if best_entry else None
        per_net: dict[str, Any] = {**(figures[best] if best else {}), "best_backend": best, "backends": figures}
        if "stock" in backends and "onednn" in backends:
            per_net["onednn_over_stock"] = {
                mode: {head: _ratio(_images_per_s(find_train(results, net, head, mode, "onednn")),
                                    _images_per_s(find_train(results, net, head, mode, "stock")))
                       for head in HEAD_LABELS}
                for mode in ("GRAPH_MODE", "PYNATIVE_MODE")}
            per_net["onednn_eval_over_stock"] = {
                head: _ratio(_images_per_s(find_train(results, net, head, backend="onednn"), "eval"),
                             _images_per_s(find_train(results, net, head, backend="stock"), "eval"))
                for head in HEAD_LABELS}
            per_net["onednn_graph_over_stock_pynative"] = {
                head: _ratio(_images_per_s(find_train(results, net, head, "GRAPH_MODE", "onednn")),
                             _images_per_s(find_train(results, net, head, "PYNATIVE_MODE", "stock")))
                for head in HEAD_LABELS}
        for isa, run in pytorch.items():
            torch_entry = (run.get("nets") or {}).get(net) if run.get("ok") else None
            if torch_entry:
                per_net[f"ours_over_pytorch_{isa}"] = _ratio(_images_per_s(best_entry), _images_per_s(torch_entry))
                if isa == pytorch_run_name(results) and "eval" in torch_entry:
                    per_net["eval_over_pytorch"] = {
                        backend: _ratio(_images_per_s(find_train(results, net, "dropcov", backend=backend), "eval"),
                                        _images_per_s(torch_entry, "eval")) for backend in backends}
                if peak_gflops and best_entry:
                    per_net[f"pytorch_{isa}_peak_fraction"] = (
                        best_entry["train_gflop_per_step"] / torch_entry["train"]["median_s"] / peak_gflops)
        derived["nets"][net] = per_net
    derived["targets"] = list(_targets(results, derived))
    results["derived"] = derived
    return derived


def _target(name: str, value: float | None, passed: bool | None, detail: str, unit: str = "x",
            best: bool = False) -> dict[str, Any]:
    """One target line; ``unit`` is how to show the value: ``x`` (ratio), ``%`` or ``images/s``; ``best``
    marks the line of the fastest convolution backend."""
    return {"name": name, "value": value, "passed": passed, "detail": detail, "unit": unit, "best": best}


def _fastest(backend: str | None, backends: list[str]) -> str:
    """``'<backend> convolutions'``, with ``', the fastest'`` when several backends were measured."""
    return f"{backend or '—'} convolutions" + (", the fastest" if len(backends) > 1 else "")


def _targets(results: dict, derived: dict) -> Iterable[dict[str, Any]]:
    settings = results.get("settings", {})
    backends = derived.get("backends") or ["stock"]
    r18 = derived["nets"].get("resnet18", {})
    r18_best = r18.get("best_backend")
    for backend in backends:
        ratio = r18.get("backends", {}).get(backend, {}).get("graph_over_pynative", {}).get("dropcov")
        yield _target(f"ResNet-18+DropCov GRAPH >= {TARGET_GRAPH_OVER_PYNATIVE}x PYNATIVE ({backend} convolutions)",
                      ratio, None if ratio is None else ratio >= TARGET_GRAPH_OVER_PYNATIVE, "ratio of images/s",
                      best=backend == r18_best and len(backends) > 1)
    if "onednn" in backends and "stock" in backends:
        ratio = r18.get("onednn_graph_over_stock_pynative", {}).get("dropcov")
        yield _target(f"ResNet-18+DropCov GRAPH with onednn convolutions >= {TARGET_GRAPH_OVER_PYNATIVE}x PYNATIVE "
                      "with stock convolutions", ratio, None if ratio is None else ratio >= TARGET_GRAPH_OVER_PYNATIVE,
                      "ratio of images/s: our kernels in graph mode against MindSpore's PyNative as shipped")
    standard = settings.get("batch_size") == 8 and settings.get("image_size") == 224
    for backend in backends:
        images = _images_per_s(find_train(results, "resnet18", "dropcov", backend=backend))
        yield _target(f"ResNet-18+DropCov GRAPH >= {TARGET_R18_IMAGES_PER_S} images/s (batch 8, 224; {backend} "
                      "convolutions)", images,
                      None if images is None or not standard else images >= TARGET_R18_IMAGES_PER_S,
                      "median step" if standard else "not applicable at this batch/image size", "images/s",
                      best=backend == r18_best and len(backends) > 1)
    for net, per_net in derived["nets"].items():
        for backend in backends:
            figures = per_net.get("backends", {}).get(backend, {})
            share = figures.get("dropcov_over_gap_s1_step_share")
            alone = _percent(figures.get("head_alone_extra_share"))
            yield _target(f"{net}: DropCov head + adaptive dropout <= {TARGET_HEAD_SHARE:.0%} of the step "
                          f"(vs stride-1 GAP; {backend} convolutions)", share,
                          None if share is None else share <= TARGET_HEAD_SHARE,
                          "(t_dropcov - t_gap_s1) / t_dropcov of whole training steps; heads timed alone: "
                          f"(t_head_dropcov - t_head_gap) / t_dropcov = {alone}",
                          "%", best=backend == per_net.get("best_backend") and len(backends) > 1)
    pipeline = results.get("pipeline") or {}
    cores = (results.get("machine") or {}).get("usable_cores")
    pipe_rate = None
    for entry in pipeline.get("train", []) if pipeline.get("ok") else []:
        if entry.get("workers") == cores and entry.get("safe_decode", True):
            pipe_rate = entry.get("images_per_s")
    for net in sorted(derived["nets"]):
        best = derived["nets"][net].get("best_backend")
        model_rate = _images_per_s(find_train(results, net, "dropcov", backend=None))
        ratio = _ratio(pipe_rate, model_rate)
        yield _target(f"Input pipeline (train transform, default decode, {cores} workers) >= {net}+DropCov "
                      f"training images/s ({_fastest(best, backends)})",
                      ratio, None if ratio is None else ratio >= 1.0, "pipeline images/s over model images/s")
    torch_run = pytorch_run_name(results)
    for net, per_net in derived["nets"].items():
        ratio = per_net.get(f"ours_over_pytorch_{torch_run}")
        yield _target(f"Stretch: {net}+DropCov >= 1.0x PyTorch (same CPU, PyTorch ISA {torch_run}; MindSpore with "
                      f"{_fastest(per_net.get('best_backend'), backends)})", ratio,
                      None if ratio is None else ratio >= 1.0, "ours / PyTorch training images/s")
    for net, per_net in derived["nets"].items():
        for backend, ratio in (per_net.get("eval_over_pytorch") or {}).items():
            if backend != "onednn" and "onednn" in backends:
                continue  # the target is about what conv_backend auto runs on CPU
            yield _target(f"{net}+DropCov evaluation >= {TARGET_EVAL_OVER_PYTORCH:.1f}x PyTorch (GRAPH_MODE, "
                          f"{backend} convolutions; PyTorch ISA {torch_run})", ratio,
                          None if ratio is None else ratio >= TARGET_EVAL_OVER_PYTORCH,
                          "forward images/s in evaluation mode, ours / PyTorch's, same batch")
    for net, per_net in derived["nets"].items():
        comparisons = [(f"{mode.split('_')[0]} training", ratios)
                       for mode, ratios in (per_net.get("onednn_over_stock") or {}).items()]
        comparisons.append(("GRAPH evaluation", per_net.get("onednn_eval_over_stock") or {}))
        for what, ratios in comparisons:
            for head, ratio in ratios.items():
                if ratio is None:
                    continue
                yield _target(f"{net}+{HEAD_LABELS[head]} {what}: conv_backend auto (onednn) >= "
                              f"{TARGET_AUTO_OVER_STOCK}x stock", ratio, ratio >= TARGET_AUTO_OVER_STOCK,
                              "images/s with our kernels over MindSpore's (never more than 3% slower)")
