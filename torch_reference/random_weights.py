"""Seeded draws for the reference networks' random weights (one generator, so a seed fixes every tensor)."""
from __future__ import annotations

from typing import Callable

import torch


def seeded_draws(seed: int) -> tuple[Callable[[torch.Size, float], torch.Tensor],
                                     Callable[[torch.Size, float, float], torch.Tensor]]:
    """``(normal(shape, std), uniform(shape, low, high))`` drawing from one ``torch.Generator`` seeded ``seed``."""
    generator = torch.Generator().manual_seed(seed)

    def normal(shape: torch.Size, std: float) -> torch.Tensor:
        return torch.randn(shape, generator=generator) * std

    def uniform(shape: torch.Size, low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(shape, generator=generator)

    return normal, uniform
