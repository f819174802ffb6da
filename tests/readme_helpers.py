"""README's command blocks, read as the tests that run them need them."""
from __future__ import annotations

import re
from pathlib import Path

README_PATH = Path(__file__).resolve().parents[1] / "README.md"


def readme_commands(heading: str) -> list[str]:
    """The commands of the first ```bash block after ``heading`` in README.md: continuation lines joined,
    whitespace collapsed, comment lines and trailing ``# comments`` dropped."""
    section = README_PATH.read_text(encoding="utf-8").split(heading, 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1).replace("\\\n", " ")
    lines = (re.sub(r"(^|\s)#.*$", "", line) for line in block.splitlines())
    return [" ".join(line.split()) for line in lines if line.strip()]


def assert_eval_results_equal_pytorch(results: dict, logits, labels: list, what: str) -> None:
    """``eval_results.json``'s mean cross entropy (to 1e-4 relative) and top-1 (exactly) equal those of the
    PyTorch network's ``logits`` (float64 tensor, ``(N, K)``) for ``labels``."""
    import pytest
    import torch

    expected_loss = float(torch.nn.functional.cross_entropy(logits, torch.tensor(labels)))
    expected_top1 = float((logits.argmax(dim=1) == torch.tensor(labels)).double().mean())
    print(f"{what}: eval loss {results['loss']:.6f}, PyTorch {expected_loss:.6f}")
    assert results["loss"] == pytest.approx(expected_loss, rel=1e-4)
    assert results["top1"] == expected_top1
