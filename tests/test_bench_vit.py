"""bench/vit.py: the summary arithmetic (the workers themselves run in ``python -m bench.vit --quick``)."""
from bench.vit import format_table, head_share


def _result(step, dropcov, plain):
    return {"ok": True, "train": {"median_s": step, "images_per_s": 8 / step},
            "eval": {"images_per_s": 20.0}, "heads": {"dropcov": {"median_s": dropcov},
                                                      "class_token": {"median_s": plain}}}


def test_head_share_and_table():
    share = head_share(_result(2.0, 0.1, 0.02))
    assert share == {"head_s": 0.1, "head_share": 0.05, "extra_over_class_token_s": 0.1 - 0.02,
                     "extra_share": (0.1 - 0.02) / 2.0}
    assert head_share({"ok": False}) is None
    record = {"settings": {"net_name": "deit_small_dropcov", "batch_size": 8, "image_size": 224, "quick": False},
              "machine": {"cpu_model": "EPYC", "usable_cores": 2, "isa_flags": ["avx512f"], "versions": {},
                          "load_average": [1.0, 1.0, 1.0]},
              "busy_before": 0.1, "busy_after": 0.2,
              "results": {"mindspore": _result(2.0, 0.1, 0.02), "pytorch": {"ok": False, "error": "no torch"}}}
    lines = format_table(record)
    assert lines[1] == "machine: EPYC (2 cores, AVX-512); "
    assert lines[-2].split() == ["mindspore", "2.000", "4.00", "20.00", "0.1000", "5.0%", "+4.0%"]
    assert lines[-1] == "pytorch    failed: no torch"
