"""The printed report of a benchmark run: markdown tables and target lines, from the results dict
(:func:`bench.report.derive` adds the derived figures)."""
from __future__ import annotations

from typing import Any

from bench.report import (
    CONV_DIRECTIONS,
    HEAD_LABELS,
    KERNEL_ORDER,
    _images_per_s,
    _median,
    _percent,
    _ratio,
    by_backend,
    derive,
    entry_backend,
    find_train,
    pytorch_run_name,
)


# ---------------------------------------------------------------------------------------- formatting
def _fmt(value: Any, spec: str = ".3g") -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return format(value, spec)
    return str(value)


def _table(headers: list[str], rows: list[list[Any]]) -> list[str]:
    """A markdown table (also readable as plain text)."""
    cells = [[_fmt(cell) for cell in row] for row in rows]
    widths = [max(len(headers[i]), *(len(row[i]) for row in cells)) if cells else len(headers[i])
              for i in range(len(headers))]
    line = "| " + " | ".join(header.ljust(width) for header, width in zip(headers, widths)) + " |"
    rule = "|" + "|".join("-" * (width + 2) for width in widths) + "|"
    body = ["| " + " | ".join(cell.ljust(width) for cell, width in zip(row, widths)) + " |" for row in cells]
    return [line, rule, *body]


def _verdict(passed: bool | None) -> str:
    return {True: "PASS", False: "FAIL", None: "n/a"}[passed]


def _backend_rank(backend: str) -> int:
    """Kernel-table order within a kernel: NumPy, MindSpore's stock kernels, ours, PyTorch, anything else."""
    for rank, prefix in enumerate(("numpy", "mindspore+", "mindspore", "torch")):
        if backend.startswith(prefix):
            return (0, 2, 1, 3)[rank]
    return 4


def _isa_shown(entry: dict) -> str:
    """The ``ONEDNN_MAX_CPU_ISA`` a worker ran with: its value, or ``default`` when unset."""
    if "onednn_max_cpu_isa" in entry:
        return entry["onednn_max_cpu_isa"] or "default"
    return entry.get("isa") or "—"


def backend_summary_lines(results: dict, derived: dict) -> list[str]:
    """The best convolution backend per net, and every onednn / stock speed-up (empty with one backend)."""
    backends = derived.get("backends") or []
    if len(backends) < 2:
        return []
    kind = cpu_kind_label(results)
    lines = [f"**Convolution backends**, {kind} CPU (stock = MindSpore's kernels, onednn = ours, what "
             "conv_backend auto runs on CPU):"]
    for net, per_net in derived["nets"].items():
        best = per_net.get("best_backend")
        rates = ", ".join(f"{backend} {_fmt(figures.get('dropcov_images_per_s', {}).get('GRAPH_MODE'))}"
                          for backend, figures in per_net.get("backends", {}).items())
        lines.append(f"- {net}+DropCov GRAPH: best **{best or '—'}** (images/s: {rates}).")
    lines.append("")
    rows = []
    for net, per_net in derived["nets"].items():
        for mode, ratios in (per_net.get("onednn_over_stock") or {}).items():
            for head, ratio in ratios.items():
                stock = find_train(results, net, head, mode, "stock")
                ours = find_train(results, net, head, mode, "onednn")
                if stock or ours:
                    rows.append([net, HEAD_LABELS[head], mode, _median(stock), _median(ours), ratio])
    if rows:
        lines += [f"onednn vs stock, {kind} CPU (training; same net, head and mode; speed-up = images/s onednn / "
                  "stock):", ""]
        lines += _table(["net", "head", "mode", "stock s/step", "onednn s/step", "speed-up"], rows) + [""]
    return lines


def busy_machine_note(results: dict) -> str:
    """A warning when other jobs used the CPUs around the run, else "".

    Judged by the CPU share busy while no worker ran (``cpu_busy`` before the first worker,
    ``cpu_busy_end`` after the last; over 25% is busy). Older results without it fall back to the
    1-minute load average at the start (over half the cores); the load at the end is not used: it counts
    the benchmark's own workers.
    """
    machine = results.get("machine", {})
    cores = machine.get("usable_cores") or 1
    shares = [share for share in (machine.get("cpu_busy"), results.get("cpu_busy_end")) if share is not None]
    if shares:
        if max(shares) <= 0.25:
            return ""
        measure = f"{100 * max(shares):.0f}% of the CPUs busy with other jobs around the run"
    else:
        start = (machine.get("load_average") or [0.0])[0]
        if start <= 0.5 * cores:
            return ""
        measure = f"1-minute load average {start:.2f} on {cores} cores when the run started"
    return (f"**Busy machine:** {measure}; these figures are not comparable with a quiet run, and PyTorch's "
            "OpenMP threads suffer most. Rerun on an idle machine.")


def cpu_kind_label(results: dict) -> str:
    """The CPU kind of the run in words (``AVX-512``, ``AVX2 (emulated ...)``); older results: from the flags."""
    machine = results.get("machine", {})
    kind = machine.get("cpu_kind") or {}
    if kind.get("label"):
        return kind["label"]
    flags = machine.get("isa_flags") or []
    return "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "unknown"


def _other(entry: dict | None) -> str:
    """The share of the CPUs other jobs took while a worker ran, as text."""
    return _percent(((entry or {}).get("cpu_share") or {}).get("other"))


def report_lines(results: dict) -> list[str]:
    """All sections as markdown lines (tables, then the target lines). Every table names the CPU kind."""
    settings = results.get("settings", {})
    machine = results.get("machine", {})
    derived = results.get("derived") or derive(results)
    kind = cpu_kind_label(results)
    shares = [machine.get("cpu_busy"), results.get("cpu_busy_end")]
    busy_text = ("" if None in shares else
                 f"; CPUs busy with other jobs {100 * shares[0]:.0f}% before the run, {100 * shares[1]:.0f}% after")
    contention = settings.get("contention") or 0
    contention_text = (f"; **{contention} competing busy processes** ran throughout (--contention)"
                       if contention else "")
    lines = [f"Machine: {machine.get('summary', '?')}; CPU kind measured: **{kind}**; load average at start "
             f"{machine.get('load_average')}, at end {results.get('load_average_end')} (the run's own workers "
             f"count in it){busy_text}{contention_text}.",
             f"Settings: batch {settings.get('batch_size')}, {settings.get('image_size')}x"
             f"{settings.get('image_size')}, {settings.get('device_target')}, {settings.get('warmup')} warm-up + "
             f"{settings.get('steps')} timed steps (median), float32"
             f"{' (QUICK: tiny sizes, not comparable)' if settings.get('quick') else ''}.", ""]
    busy = busy_machine_note(results)
    if busy:
        lines[-1:-1] = [busy]

    lines += backend_summary_lines(results, derived)
    lines += [f"Training step, {kind} CPU (images/s from the median step; GFLOP/s counts 3 x forward MACs x 2; "
              "conv = convolution kernels, onednn being what conv_backend auto runs on CPU; ISA = the worker's "
              "ONEDNN_MAX_CPU_ISA; other jobs = their share of the CPUs while the worker ran):", ""]
    rows = []
    for entry in results.get("train", []):
        label = HEAD_LABELS.get(entry.get("head_label"), entry.get("head_label"))
        if entry.get("ok"):
            rows.append([entry["net_name"], label, entry["mode_name"], entry_backend(entry), _isa_shown(entry),
                         entry["train"]["median_s"], entry["train"]["images_per_s"], entry.get("achieved_gflops"),
                         _percent(entry.get("peak_fraction")), _other(entry)])
        else:
            rows.append([entry.get("net_name"), label, entry.get("mode_name"), entry_backend(entry), "—", "failed",
                         entry.get("error", "")[:60], None, None, _other(entry)])
    lines += _table(["net", "head", "mode", "conv", "ISA", "s/step", "images/s", "GFLOP/s", "of peak", "other jobs"],
                    rows) + [""]

    rows = []
    for entry in results.get("train", []):
        if entry.get("ok") and "eval" in entry:
            net, head = entry["net_name"], entry["head_label"]
            stock = find_train(results, net, head, backend="stock")
            versus = _ratio(_images_per_s(entry, "eval"), _images_per_s(stock, "eval")) if stock else None
            rows.append([net, HEAD_LABELS.get(head), entry_backend(entry), _isa_shown(entry), entry["eval"]["median_s"],
                         entry["eval"]["images_per_s"], versus, _other(entry)])
    if rows:
        lines += [f"Evaluation, {kind} CPU (forward, evaluation mode, GRAPH_MODE; vs stock: images/s over the stock "
                  "convolutions' for the same net and head):", ""]
        lines += _table(["net", "head", "conv", "ISA", "s/batch", "images/s", "vs stock", "other jobs"], rows) + [""]

    rows, notes, header = [], [], None
    for backend, head in by_backend(results.get("head")).items():
        if not head.get("ok"):
            notes.append(f"DropCov head alone with {backend} convolutions: not measured ({head.get('error')}).")
            continue
        header = header or head
        for net, data in head["nets"].items():
            shares = derived["nets"].get(net, {}).get("backends", {}).get(backend, {}).get("head_alone_share", {})
            for name, timing in data["whole"].items():
                rows.append([net, backend, f"head: {name}", 1e3 * timing["median_s"], _percent(shares.get(name))])
            for name, timing in data["pieces"].items():
                rows.append([net, backend, f"piece: {name}", 1e3 * timing["median_s"], None])
            for name in ("rowsum_cov_full", "rowsum_cov_fast"):
                rows.append([net, backend, f"forward: {name}", 1e3 * data["speedups"][name]["median_s"], None])
        if head.get("note"):
            notes.append(f"Note ({backend}): {head['note']}.")
    if header:
        lines += [f"DropCov head alone, {kind} CPU (GRAPH_MODE, input {header['batch_size']}x C5 x {header['feature_size']}x"
                  f"{header['feature_size']}; whole heads: loss + backward + Momentum update; pieces: forward + "
                  "backward of sum(output); conv: the 1x1 reduction's kernels; of DropCov step: that backend's "
                  "step):", ""]
        lines += _table(["net", "conv", "part", "ms", "of DropCov step"], rows) + [""]
    if notes:
        lines += [*notes, ""]

    for backend, profile in by_backend(results.get("profile")).items():
        lines += profile_lines(profile, derived.get("peak_gflops"), backend, kind)

    pytorch = results.get("pytorch") or {}
    rows = []
    for isa, run in pytorch.items():
        if not run.get("ok"):
            rows.append([f"PyTorch {run.get('torch', '')} ISA={isa}", "failed", run.get("error", "")[:60], None, None,
                         None, None, None, None, _other(run)])
            continue
        for net, entry in run.get("nets", {}).items():
            per_net = derived["nets"].get(net, {})
            eval_ratio = ((per_net.get("eval_over_pytorch") or {}).get("onednn")
                          if isa == pytorch_run_name(results) else None)
            rows.append([f"PyTorch {run['torch']} ISA={isa}, {run['threads']} threads", net,
                         entry["train"]["median_s"], entry["train"]["images_per_s"],
                         _percent(per_net.get(f"pytorch_{isa}_peak_fraction")), per_net.get("best_backend"),
                         per_net.get(f"ours_over_pytorch_{isa}"), _images_per_s(entry, "eval"), eval_ratio,
                         _other(run)])
    if rows:
        lines += [f"PyTorch eager, {kind} CPU: the authors' network with the same 128-d head (ISA=AVX2 caps oneDNN, "
                  "ATen and MKL; training step; of peak with our FLOP count; ours = MindSpore GRAPH_MODE with the "
                  "fastest convolution backend, ours conv; eval = forward in evaluation mode, ours/PyTorch there "
                  "with the onednn convolutions):", ""]
        lines += _table(["run", "net", "s/step", "images/s", "of peak", "ours conv", "ours/PyTorch",
                         "eval images/s", "eval ours/PyTorch", "other jobs"], rows) + [""]

    pipeline = results.get("pipeline") or {}
    if pipeline.get("ok"):
        lines += [f"Input pipeline, {kind} CPU ({pipeline['images']} generated JPEGs ~{pipeline['jpeg_size']}, "
                  f"~{pipeline.get('generated', {}).get('mean_kb', 0):.0f} KB, read {pipeline.get('repeats', 1)}x per pass; batch "
                  f"{pipeline['batch_size']}, {pipeline['image_size']}x{pipeline['image_size']} output; images/s "
                  "over the whole pass, start-up included):", ""]
        rows = [[kind, "Pillow (safe_decode)" if entry.get("safe_decode", True) else "MindSpore fused",
                 entry["workers"], entry["images_per_s"], entry.get("startup_s")]
                for kind in ("train", "eval") for entry in pipeline.get(kind, [])]
        lines += _table(["transform", "decode", "workers", "images/s", "start-up s"], rows) + [""]
    elif pipeline:
        lines += [f"Input pipeline: not measured ({pipeline.get('error', 'skipped')}).", ""]

    peak = results.get("peak") or {}
    if peak.get("kernels"):
        lines += [f"Dense float32 kernels, {kind} CPU (forward, median of repeated calls; per kernel: MindSpore's stock "
                  "kernels, our blocked-layout convolutions, PyTorch):", ""]
        ordered = sorted(peak["kernels"], key=lambda kernel: (
            KERNEL_ORDER.index(kernel["kernel"]) if kernel["kernel"] in KERNEL_ORDER else len(KERNEL_ORDER),
            _backend_rank(kernel["backend"])))
        rows = [[kernel["kernel"], kernel["backend"], kernel["isa"], kernel["gflops"]] for kernel in ordered]
        lines += _table(["kernel", "backend", "ONEDNN_MAX_CPU_ISA", "GFLOP/s"], rows)
        best = peak.get("best") or {}
        lines += ["", f"Best: {_fmt(best.get('gflops'))} GFLOP/s ({best.get('backend')} {best.get('kernel')}, "
                      f"ISA {best.get('isa')}).", ""]
        lines += [f"Not measured: {error}" for error in peak.get("errors", [])]
        lines += [""] if peak.get("errors") else []

    tuning = results.get("tuning") or []
    if tuning:
        lines += [f"Tuning experiments, {kind} CPU (not applied; for the owners of the code):", ""]
        rows = [[entry.get("name"), entry.get("value"), entry.get("baseline"), entry.get("detail")] for entry in tuning]
        lines += _table(["experiment", "value", "baseline", "detail"], rows) + [""]

    lines += [f"Targets, {kind} CPU:", ""]
    for target in derived["targets"]:
        value, unit = target["value"], target.get("unit", "x")
        if value is None:
            shown = "not measured"
        else:
            shown = _percent(value) if unit == "%" else f"{value:.3g}{unit if unit == 'x' else ' ' + unit}"
        best = " **[best backend]**" if target.get("best") else ""
        lines.append(f"- {_verdict(target['passed'])}: {target['name']}{best} — {shown} ({target['detail']})")
    return lines


def profile_lines(profile: dict, peak_gflops: float | None = None, backend: str | None = None,
                  kind: str | None = None) -> list[str]:
    """The operator profile (:mod:`bench.op_profile`) as markdown: ms/step and share per group, then the
    convolutions' ms/step and GFLOP/s per direction (and their fraction of the best kernel, if known).

    ``backend`` names the convolution backend in the line of a profile that failed; ``kind`` the CPU kind."""
    if not profile:
        return []
    if not profile.get("ok"):
        which = f" with {backend} convolutions" if backend else ""
        return [f"Operator profile{which}: not measured ({profile.get('error', 'skipped')}).", ""]
    total = profile["total_ms_per_step"]
    on_kind = f", {kind} CPU" if kind else ""
    lines = [f"Where the step goes{on_kind} ({profile['net_name']} + {profile['head']}, "
             f"{profile.get('conv_backend', 'stock')} convolutions, GRAPH_MODE, CPU, "
             f"ISA {_isa_shown(profile)}, batch "
             f"{profile['batch_size']}, {profile['image_size']}x{profile['image_size']}; MindSpore profiler over "
             f"{profile['steps']} steps: {total:.0f} ms of kernels per step, the profiled steps took "
             f"{', '.join(f'{t:.3g}' for t in profile['step_wall_s'])} s):", ""]
    rows = [[group, f"{ms:.1f}", _percent(ms / total if total else None)]
            for group, ms in sorted(profile["by_group"].items(), key=lambda item: -item[1])]
    lines += _table(["group", "ms/step", "share"], rows + [["total", f"{total:.1f}", _percent(1.0)]]) + [""]
    conv_ms: dict[str, float] = {}
    for row in profile.get("ops", []):
        if row["op_type"] in CONV_DIRECTIONS:
            conv_ms[row["op_type"]] = conv_ms.get(row["op_type"], 0.0) + row["ms_per_step"]
    gflops = profile.get("conv_gflops") or {}
    rows = [[direction, op_type, _fmt(conv_ms.get(op_type), ".1f"), _fmt(gflops.get(op_type), ".0f"),
             _percent(_ratio(gflops.get(op_type), peak_gflops))]
            for op_type, direction in CONV_DIRECTIONS.items() if op_type in gflops or op_type in conv_ms]
    if rows:
        lines += ["Convolutions (GFLOP/s = 2 x forward MACs x batch per direction over its ms/step; of peak: "
                  "against the best dense kernel of this run):", ""]
        lines += _table(["direction", "op", "ms/step", "GFLOP/s", "of peak"], rows) + [""]
    return lines
