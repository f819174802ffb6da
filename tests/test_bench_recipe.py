"""The recipe benchmark: its report against the targets, and the pipeline worker on a few generated JPEGs."""
import pytest

from bench.common import run_worker
from bench.recipe import report_lines


def results_with(per_cpu: float, ema_overhead: float) -> dict:
    step = {"median_s": 1.0, "min_s": 0.9}
    return {
        "machine": {"summary": "test CPU"}, "load_average_start": [0.1], "load_average_end": [0.2],
        "cpu_busy_start": 0.01, "cpu_busy_end": 0.02,
        "pipeline": {"ok": True, "images": 8, "jpeg_size": "500x375", "repeats": 2, "batch_size": 4, "image_size": 224,
                     "runs": [{"recipe": "deit", "workers": 1, "images_per_s": 200.0, "images_per_cpu_s": per_cpu},
                              {"recipe": "today", "workers": 1, "images_per_s": 500.0, "images_per_cpu_s": 600.0}],
                     "stages_ms_per_image": {"decode": 1.0, "total": 3.0}},
        "step": {"ok": True, "net_name": "resnet18", "head": "dropcov", "batch_size": 8, "image_size": 224,
                 "conv_backend": "stock", "accumulation_steps": 2, "rounds": 4,
                 "variants": {"plain": step, "ema": {"median_s": 1.0 + ema_overhead, "min_s": 1.0}},
                 "overhead": {"ema": ema_overhead}},
    }


def test_report_judges_the_figures_against_the_targets():
    passing = "\n".join(report_lines(results_with(300.0, 0.01)))
    assert "deit  1 worker(s):   200.0 images/s,   300.0 images per CPU-second PASS" in passing
    assert "(+1.0% PASS, target <= +3%)" in passing and "today" in passing
    failing = "\n".join(report_lines(results_with(120.0, 0.05)))
    assert "120.0 images per CPU-second FAIL" in failing and "(+5.0% FAIL" in failing


@pytest.mark.slow
def test_pipeline_worker_measures_both_recipes():
    result = run_worker("recipe_pipeline", {"images": 8, "batch_size": 4, "image_size": 64, "workers": [1],
                                            "min_images": 8}, timeout=300)
    assert result["ok"], result.get("error")
    assert {run["recipe"] for run in result["runs"]} == {"deit", "today"}
    assert all(run["images"] == 8 and run["images_per_cpu_s"] > 0 for run in result["runs"])
    stages = result["stages_ms_per_image"]
    assert stages["total"] == pytest.approx(sum(value for name, value in stages.items() if name != "total"), abs=1e-3)
