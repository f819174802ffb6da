"""train.py with an output folder of its own per rank, for tests/test_robustness_runs.py: a data-parallel job
whose ranks do not share their output folder (what a multi-node run without a shared file system has).

  msrun --worker_num=2 ... tests/per_rank_output_worker.py BASE train.py-options with PER_RANK as output_path

Each worker replaces ``PER_RANK`` by ``BASE/rank<RANK_ID>`` (msrun's worker index) and runs train.py's main.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))


if __name__ == "__main__":
    import train
    from src.cli import run_entry_point

    base, *argv = sys.argv[1:]
    folder = str(Path(base) / f"rank{os.environ.get('RANK_ID', '0')}")
    sys.exit(run_entry_point(train.main, [folder if arg == "PER_RANK" else arg for arg in argv], program="train.py"))
