"""Random numbers for stochastic layers that depend on nothing but (seed, client, position).

Why not ``torch.rand``: a layer's randomness must be the same whether its client trains alone or
batched with others under ``vmap``, whatever the chunk, the process or the device, and it must
continue bit-exactly after ``--resume``. Drawing from one generator in call order gives none of
this. Here every value is a hash of a 64-bit *client key* (from the run seed and the client id),
a *tag* naming the forward pass (purpose, round, step: hashed on the host) and the call's count
within that pass, and the element's position — a counter-based stream in the manner of Philox,
computed with int64 tensor arithmetic (which wraps around, as the hash needs) on any device.
Inside ``vmap`` the client keys are a batched input, so each client gets its own values with no
Python loop over clients; a block of one client gets exactly the same numbers.

The engine opens a stream around each forward pass (``stream(keys, tag)``); layers call
``uniform(shape, device)``. Outside a stream (a model used on its own, a meta-device probe) the
layer falls back to ``torch.rand`` with torch's global generator.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import torch
from torch import Tensor

_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_MIX1 = 0xBF58476D1CE4E5B9
_MIX2 = 0x94D049BB133111EB


def _signed(value: int) -> int:
    """A 64-bit pattern as the int64 torch stores it."""
    value &= _MASK64
    return value - (1 << 64) if value >= 1 << 63 else value


def mix64(*words: int) -> int:
    """SplitMix64 over a sequence of integers (host side): a well-spread 64-bit key."""
    state = 0
    for word in words:
        state = (state + _GOLDEN + (word & _MASK64)) & _MASK64
        z = state
        z = ((z ^ (z >> 30)) * _MIX1) & _MASK64
        z = ((z ^ (z >> 27)) * _MIX2) & _MASK64
        state = z ^ (z >> 31)
    return _signed(state)


def client_key(seed: int, client: int) -> int:
    """The key of one client's stream (the server's global model uses client -1)."""
    return mix64(0x5EED, seed, client)


def _shift_right(z: Tensor, bits: int) -> Tensor:
    """Logical right shift of int64 tensors (``>>`` is arithmetic for signed integers)."""
    return (z >> bits) & ((1 << (64 - bits)) - 1)


def _mix(z: Tensor) -> Tensor:
    """The SplitMix64 finaliser on int64 tensors (multiplications wrap modulo 2^64)."""
    z = (z ^ _shift_right(z, 30)) * torch.tensor(_signed(_MIX1), device=z.device)
    z = (z ^ _shift_right(z, 27)) * torch.tensor(_signed(_MIX2), device=z.device)
    return z ^ _shift_right(z, 31)


@dataclass
class Stream:
    """The random stream of one forward pass: per-client keys, the pass's tag, calls so far."""

    keys: Tensor  # int64; [k] for a block, or one client's 0-dim key (batched inside vmap)
    tag: int
    calls: int = 0


_CURRENT: ContextVar[Stream | None] = ContextVar("fedlab_noise_stream", default=None)


@contextmanager
def stream(keys: Tensor, tag: int) -> Iterator[Stream]:
    """Make ``uniform`` draw from these clients' streams for the pass named by ``tag``."""
    token = _CURRENT.set(Stream(keys, tag))
    try:
        yield _CURRENT.get()
    finally:
        _CURRENT.reset(token)


@contextmanager
def substream(keys: Tensor) -> Iterator[None]:
    """Inside ``vmap``: the same pass, with the keys replaced by the batched per-client keys."""
    outer = _CURRENT.get()
    if outer is None:
        yield
        return
    inner = Stream(keys, outer.tag, outer.calls)
    token = _CURRENT.set(inner)
    try:
        yield
    finally:
        _CURRENT.reset(token)
        outer.calls = inner.calls


def active() -> Stream | None:
    return _CURRENT.get()


def uniform(shape: torch.Size | tuple[int, ...], device: torch.device | str) -> Tensor:
    """Float32 values in [0, 1) (24 random bits each), one per element of ``shape``."""
    current = _CURRENT.get()
    if current is None or torch.device(device).type == "meta":
        return torch.rand(shape, device=device)
    current.calls += 1
    keys = current.keys.to(device)
    base = _mix(keys ^ mix64(current.tag, current.calls))
    count = int(torch.Size(shape).numel())
    position = torch.arange(count, device=device, dtype=torch.int64)
    bits = _mix(base.unsqueeze(-1) + position * torch.tensor(_signed(_GOLDEN), device=device))
    return (_shift_right(bits, 40).to(torch.float32) * 2.0**-24).reshape(*base.shape, *shape)
