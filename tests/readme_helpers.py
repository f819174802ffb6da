"""README's command blocks, and what the tests that run them compare with (the authors' preprocessing and scores)."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

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


def resize_256_crop_224_batch(files, resample: str) -> np.ndarray:
    """The authors' evaluation preprocessing of image files, computed with Pillow and numpy: shorter side to 256
    (``resample`` ``"bilinear"``: torchvision's ``Resize(256)``; ``"bicubic"``: timm's ``int(224 / 0.875)``),
    centre crop 224, ``ToTensor``, ImageNet ``Normalize``; ``(N, 3, 224, 224)`` float32."""
    from PIL import Image

    filters = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    batch = []
    for path in files:
        with Image.open(path) as image:
            image = image.convert("RGB")
            width, height = image.size
            size = (256, int(256 * height / width)) if width <= height else (int(256 * width / height), 256)
            pixels = np.asarray(image.resize(size, filters[resample]), dtype=np.float64) / 255.0
        top, left = int(round((pixels.shape[0] - 224) / 2.0)), int(round((pixels.shape[1] - 224) / 2.0))
        batch.append(((pixels[top:top + 224, left:left + 224] - mean) / std).transpose(2, 0, 1))
    return np.stack(batch).astype(np.float32)
