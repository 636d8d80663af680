"""Checkpoints as client slices plus one manifest, resumable at any number of processes.

Each process writes the slice of the population it holds (its clients' parameters, buffers,
declared method state and kept optimizer state) to ``checkpoints/shards/round_NNNN.clients_A-B.pt``;
rank 0 writes ``checkpoints/round_NNNN.pt`` last — the round's manifest: the shard files,
and everything that is the same on every process (round counter, the draw generator, the
method's global state, the observers). A round's checkpoint exists only once its manifest
does, so a crash mid-save leaves the previous checkpoint the latest. Loading reads whichever
shards cover this process's clients, so a checkpoint of 2 processes resumes in 1 and vice
versa. A checkpoint of one file with the whole population (fedlab before scale-out) loads too.
"""

from __future__ import annotations

from pathlib import Path

import torch

from fedlab_cli.atomic import atomic_torch_save
from fedlab_cli.engine.federation import Federation
from fedlab_cli.engine.rundir import RunDir
from fedlab_cli.errors import FedlabError

FORMAT = 2


def shard_name(round_index: int, first: int, last: int) -> str:
    return f"round_{round_index:04d}.clients_{first}-{last}.pt"


def save(run_dir: RunDir, round_index: int, federation: Federation, keep: int) -> None:
    """This process's slice, then (rank 0, after every slice is written) the manifest."""
    population = federation.population
    world = population.world
    first, last = population.first, population.first + population.num_clients
    atomic_torch_save(
        {"first": first, "last": last, "population": population.state_dict()},
        run_dir.shard_path(shard_name(round_index, first, last)),
    )
    world.barrier()
    if world.is_main:
        bounds = [world.bounds(population.total_clients, r) for r in range(world.size)]
        shards = [shard_name(round_index, a, b) for a, b in bounds]
        run_dir.record_shards(shards)
        manifest = {
            **federation.global_state(),
            "format": FORMAT,
            "clients": population.total_clients,
            "shards": shards,
        }
        run_dir.save_checkpoint(round_index, manifest, keep)
    world.barrier()


def load(run_dir: RunDir, state: dict, first: int, last: int) -> dict:
    """The full state a ``Federation`` restores, with the population sliced to clients
    ``first … last − 1`` from whichever shard files hold them."""
    if "population" in state:  # one file: the whole population
        return {**state, "population": slice_population(state["population"], 0, first, last)}
    parts = []
    for name in state["shards"]:
        path = run_dir.shard_path(name)
        if not path.is_file():
            raise FedlabError(f"--resume: checkpoint shard {str(path)!r} is missing")
        a, b = _bounds(name)
        if b <= first or a >= last:
            continue
        try:
            shard = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            raise FedlabError(
                f"--resume: checkpoint shard {str(path)!r} does not load ({err})"
            ) from None
        parts.append(slice_population(shard["population"], a, max(a, first), min(b, last)))
    return {**state, "population": join_populations(parts)}


def _bounds(name: str) -> tuple[int, int]:
    a, b = Path(name).stem.split(".clients_")[1].split("-")
    return int(a), int(b)


def slice_population(state: dict, offset: int, first: int, last: int) -> dict:
    """Clients ``first … last − 1`` of a population state whose row 0 is client ``offset``."""
    rows = slice(first - offset, last - offset)
    return {
        "params": {n: t[rows] for n, t in state["params"].items()},
        "buffers": {n: t[rows] for n, t in state["buffers"].items()},
        "state": {n: t[rows] for n, t in state.get("state", {}).items()},
        "optimizer": {
            n: {s: t[rows] for s, t in slots.items()}
            for n, slots in state.get("optimizer", {}).items()
        },
        "optimizer_steps": state["optimizer_steps"][rows] if "optimizer_steps" in state else None,
    }


def join_populations(parts: list[dict]) -> dict:
    """Consecutive client slices joined along the client dimension."""
    first = parts[0]

    def cat(group: str) -> dict:
        return {n: torch.cat([p[group][n] for p in parts]) for n in first[group]}

    steps = [p["optimizer_steps"] for p in parts]
    return {
        "params": cat("params"),
        "buffers": cat("buffers"),
        "state": cat("state"),
        "optimizer": {
            n: {s: torch.cat([p["optimizer"][n][s] for p in parts]) for s in slots}
            for n, slots in first["optimizer"].items()
        },
        "optimizer_steps": torch.cat(steps) if all(s is not None for s in steps) else None,
    }
