"""Stacked optimizers equal torch.optim step for step; clipping equals clip_grad_norm_."""

import pytest
import torch

from fedlab_cli.engine.optim import SGD, Adam, clip_grad_norms

CLIENTS = 3
SHAPES = {"w": (5, 3), "b": (4,)}


def torch_reference(make_optimizer, starts, grads_per_step):
    """One torch.optim optimizer per client, stepped with that client's gradients."""
    finals = []
    for c in range(CLIENTS):
        params = [torch.nn.Parameter(starts[n][c].clone()) for n in SHAPES]
        optimizer = make_optimizer(params)
        for grads in grads_per_step:
            for p, n in zip(params, SHAPES, strict=True):
                p.grad = grads[n][c].clone()
            optimizer.step()
        finals.append({n: p.detach() for p, n in zip(params, SHAPES, strict=True)})
    return finals


def stacked_run(optimizer, starts, grads_per_step, lr, done=(0, 0, 0)):
    params = {n: t.clone() for n, t in starts.items()}
    state = optimizer.init(params)
    for step, grads in enumerate(grads_per_step, start=1):
        optimizer.step(
            params, {n: g.clone() for n, g in grads.items()}, state, lr, [d + step for d in done]
        )
    return params


def random_problem(steps=5):
    torch.manual_seed(0)
    starts = {n: torch.randn(CLIENTS, *s) for n, s in SHAPES.items()}
    grads = [
        {n: torch.randn(CLIENTS, *s) * (k + 1) for n, s in SHAPES.items()} for k in range(steps)
    ]
    return starts, grads


@pytest.mark.parametrize(
    "momentum, weight_decay, nesterov",
    [(0.0, 0.0, False), (0.9, 0.0, False), (0.9, 1e-3, False), (0.9, 5e-4, True), (0.5, 0.0, True)],
)
def test_sgd_equals_torch_step_for_step(momentum, weight_decay, nesterov):
    starts, grads = random_problem()
    ours = stacked_run(SGD(momentum, weight_decay, nesterov), starts, grads, lr=0.1)
    theirs = torch_reference(
        lambda p: torch.optim.SGD(
            p, lr=0.1, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov
        ),
        starts,
        grads,
    )
    for c in range(CLIENTS):
        for n in SHAPES:
            assert torch.equal(ours[n][c], theirs[c][n]), (c, n)


@pytest.mark.parametrize("weight_decay", [0.0, 1e-2])
@pytest.mark.parametrize("betas, eps", [((0.9, 0.999), 1e-8), ((0.5, 0.9), 1e-3)])
def test_adam_equals_torch_step_for_step(weight_decay, betas, eps):
    starts, grads = random_problem(steps=6)
    ours = stacked_run(Adam(betas, eps, weight_decay), starts, grads, lr=0.1)
    theirs = torch_reference(
        lambda p: torch.optim.Adam(p, lr=0.1, betas=betas, eps=eps, weight_decay=weight_decay),
        starts,
        grads,
    )
    for c in range(CLIENTS):
        for n in SHAPES:
            assert torch.equal(ours[n][c], theirs[c][n]), (c, n)


def test_adam_with_clients_at_different_step_counts():
    """Clients that took 0, 3 and 7 steps before (kept state): each equals a torch Adam that
    already took that many steps, then continues."""
    torch.manual_seed(1)
    done = (0, 3, 7)
    history = [{n: torch.randn(CLIENTS, *s) for n, s in SHAPES.items()} for _ in range(7)]
    later = [{n: torch.randn(CLIENTS, *s) for n, s in SHAPES.items()} for _ in range(4)]
    starts = {n: torch.randn(CLIENTS, *s) for n, s in SHAPES.items()}
    optimizer = Adam((0.9, 0.999), 1e-8, 1e-3)
    # bring each client to its step count with torch, then copy that state into the stack
    references, state_rows, param_rows = [], [], []
    for c in range(CLIENTS):
        params = [torch.nn.Parameter(starts[n][c].clone()) for n in SHAPES]
        adam = torch.optim.Adam(params, lr=0.05, weight_decay=1e-3)
        for grads in history[: done[c]]:
            for p, n in zip(params, SHAPES, strict=True):
                p.grad = grads[n][c].clone()
            adam.step()
        param_rows.append({n: p.detach().clone() for p, n in zip(params, SHAPES, strict=True)})
        state_rows.append(
            {
                n: {
                    k: adam.state[p][k].clone() if k in adam.state[p] else torch.zeros_like(p)
                    for k in ("exp_avg", "exp_avg_sq")
                }
                for p, n in zip(params, SHAPES, strict=True)
            }
        )
        for grads in later:
            for p, n in zip(params, SHAPES, strict=True):
                p.grad = grads[n][c].clone()
            adam.step()
        references.append({n: p.detach() for p, n in zip(params, SHAPES, strict=True)})
    params = {n: torch.stack([row[n] for row in param_rows]) for n in SHAPES}
    state = {
        n: {k: torch.stack([row[n][k] for row in state_rows]) for k in optimizer.slots}
        for n in SHAPES
    }
    for step, grads in enumerate(later, start=1):
        optimizer.step(params, grads, state, 0.05, [d + step for d in done])
    for c in range(CLIENTS):
        for n in SHAPES:
            assert torch.equal(params[n][c], references[c][n]), (c, n)


@pytest.mark.parametrize("max_norm", [0.5, 3.0, 1e6])
def test_clipping_equals_clip_grad_norm_per_client(max_norm):
    torch.manual_seed(2)
    grads = {n: torch.randn(CLIENTS, *s) * 2 for n, s in SHAPES.items()}
    expected = []
    for c in range(CLIENTS):
        holders = []
        for n in SHAPES:
            t = torch.zeros(SHAPES[n], requires_grad=True)
            t.grad = grads[n][c].clone()
            holders.append(t)
        torch.nn.utils.clip_grad_norm_(holders, max_norm)
        expected.append([t.grad for t in holders])
    clip_grad_norms(grads, max_norm)
    for c in range(CLIENTS):
        for g, n in zip(expected[c], SHAPES, strict=True):
            torch.testing.assert_close(grads[n][c], g, rtol=1e-6, atol=1e-7)
    norms = torch.stack(
        [torch.cat([grads[n][c].flatten() for n in SHAPES]).norm() for c in range(CLIENTS)]
    )
    assert (norms <= max_norm * (1 + 1e-5)).all()
