"""Our functional SGD must match torch.optim.SGD step for step."""

import pytest
import torch

from fedlab_cli.engine.sgd import sgd_step


@pytest.mark.parametrize("momentum, weight_decay", [(0.0, 0.0), (0.9, 0.0), (0.9, 1e-3)])
def test_matches_torch_optim_sgd(momentum, weight_decay):
    torch.manual_seed(0)
    w0 = torch.randn(5, 3)
    theirs = torch.nn.Parameter(w0.clone())
    opt = torch.optim.SGD([theirs], lr=0.1, momentum=momentum, weight_decay=weight_decay)
    ours = {"w": w0.clone()}
    buffers: dict = {}
    for step in range(4):
        grad = torch.randn(5, 3) * (step + 1)
        theirs.grad = grad.clone()
        opt.step()
        sgd_step(ours, {"w": grad}, buffers, 0.1, momentum, weight_decay)
        torch.testing.assert_close(ours["w"], theirs.detach(), rtol=0, atol=1e-6)
