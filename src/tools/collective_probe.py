"""Time a launched job's first all-reduce: on GPUs newer than Pascal it includes the JIT compile of NCCL's kernels.

    mpirun -n 2 python -m src.tools.collective_probe --device_target GPU     (scripts/gpu_smoke.sh runs it)

Every rank joins as train.py's ranks do (its start line names its device), all-reduces a float32 vector holding
``rank + 1`` twice, and checks the sum against ``N (N + 1) / 2``; rank 0 prints the two times. The NCCL that
MindSpore 2.10 bundles carries machine code for sm_60 only, so on a newer GPU the first collective waits for the
driver to compile its kernels, once per driver version while ``CUDA_CACHE_PATH`` (default ~/.nv/ComputeCache)
keeps them; a second start then reads them from there.
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import Sequence

from ..cli import run_entry_point
from ..errors import DropCovError

#: Values per all-reduce: 4 MiB of float32, the size of a fused gradient bucket.
PROBE_VALUES = 1 << 20


def probe(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="collective_probe", description=__doc__.splitlines()[0])
    parser.add_argument("--device_target", choices=("GPU", "CPU"), default="GPU")
    args = parser.parse_args(argv)
    from ..runtime.context import start_run
    from ..runtime.launchers import launch_position

    position = launch_position()
    config = argparse.Namespace(device_target=args.device_target, mode_name="GRAPH_MODE", device_id=0,
                                run_distribute=True, device_num=position.size or 1 if position else 1,
                                all_reduce_fusion_config=())
    parallel = start_run(config, "stock").parallel
    import numpy as np

    from ..runtime.distributed import sum_over_ranks

    values = np.full(PROBE_VALUES, parallel.rank + 1, np.float32)
    expected = parallel.group_size * (parallel.group_size + 1) / 2
    seconds = []
    for _ in range(2):
        started = time.perf_counter()
        total = sum_over_ranks(values)
        seconds.append(time.perf_counter() - started)
        if not np.all(total == expected):
            raise DropCovError(f"all-reduce over {parallel.group_size} ranks gave {total[:3]}..., expected {expected}")
    if parallel.is_main:
        print(f"collective_probe: {parallel.group_size} ranks: first all-reduce of {4 * PROBE_VALUES >> 20} MiB "
              f"{seconds[0]:.2f} s (with NCCL's kernel JIT on a GPU newer than Pascal, until CUDA_CACHE_PATH holds "
              f"them), second {1000 * seconds[1]:.1f} ms; sums correct", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(run_entry_point(probe, program="collective_probe"))
