"""Which device a run trains on, and a loud notice when the asked-for GPU is not there."""

from __future__ import annotations

import torch


def resolve_device(requested: str) -> tuple[torch.device, str | None]:
    """The device to use and, when it differs from what was asked, a notice to show the user."""
    has_cuda = torch.cuda.is_available()
    if requested == "cuda" and not has_cuda:
        return torch.device("cpu"), (
            "engine.device is 'cuda' but no CUDA GPU is available: running on the CPU instead, "
            "which is much slower"
        )
    if requested == "cuda" or (requested == "auto" and has_cuda):
        return torch.device("cuda"), None
    return torch.device("cpu"), None
