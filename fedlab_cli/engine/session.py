"""Start, resume and finish a run: validation first, then the run directory, then rounds.

Everything that can reject the input (spec, dataset files, partition size, model shape) runs
before the run directory is created, so bad input leaves nothing behind.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedlab_cli.data.partition import ClientSplits
from fedlab_cli.engine import checkpoint
from fedlab_cli.engine.build import build_federation
from fedlab_cli.engine.federation import Federation, RoundRecord
from fedlab_cli.engine.inertia import InertiaRecorder, attach_inertia
from fedlab_cli.engine.rundir import PARTITION, SPEC, RunDir
from fedlab_cli.errors import FedlabError
from fedlab_cli.spec.load import ResolvedSpec, load_spec

Progress = Callable[[str, int, int], None]


@dataclass
class RunSession:
    """One run being trained into its run directory."""

    resolved: ResolvedSpec
    run_dir: RunDir
    federation: Federation
    records: list[dict]
    notice: str | None = None
    inertia: InertiaRecorder | None = None

    @classmethod
    def start(
        cls, resolved: ResolvedSpec, path: Path, progress: Progress | None = None
    ) -> RunSession:
        """Validate everything, then create the run directory at ``path`` (rank 0 of a run
        over several processes; the others write only their checkpoint slices)."""
        run_dir = RunDir(path)
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise FedlabError(
                f"output.dir: {str(path)!r} already exists; choose another or resume it "
                f"with `fedlab run --resume {path}`"
            )
        federation = build_federation(resolved, progress=progress)
        inertia = attach_inertia(federation, resolved.spec.inertia.ref_rounds)
        world = federation.population.world
        if world.is_main:
            run_dir.create(resolved.to_yaml(), federation.splits.to_json())
        world.barrier()
        return cls(resolved, run_dir, federation, [], federation.notice, inertia)

    @classmethod
    def resume(cls, path: Path, progress: Progress | None = None) -> RunSession:
        """Continue a run from its last checkpoint, with the numbers an uninterrupted run gives."""
        run_dir = RunDir(path)
        if not run_dir.is_run:
            raise FedlabError(f"--resume: {str(path)!r} is not a run directory (no {SPEC})")
        resolved = load_spec(path / SPEC)
        splits = ClientSplits.from_json(json.loads((path / PARTITION).read_text()))
        state = run_dir.latest_checkpoint()
        federation = build_federation(
            resolved, splits=splits, progress=progress, calibrate=state is None
        )
        notice = federation.notice
        inertia = None
        if state is None or state["observers"]:  # runs from before inertia resume without it
            inertia = attach_inertia(federation, resolved.spec.inertia.ref_rounds)
        if state is not None:
            pop = federation.population
            held = checkpoint.load(run_dir, state, pop.first, pop.first + pop.num_clients)
            federation.load_state_dict(held)
        world = federation.population.world
        if world.is_main:
            records = run_dir.keep_metrics_through(federation.next_round - 1)
            if inertia is not None:
                run_dir.keep_inertia_through(federation.next_round - 1)
        else:
            records = run_dir.metrics()[: federation.next_round]
        world.barrier()
        return cls(resolved, run_dir, federation, records, notice, inertia)

    def on_round(self, record: RoundRecord) -> None:
        """Log the round; checkpoint every ``output.checkpoint_every`` rounds and at the end."""
        line = record.to_json(with_global=self.resolved.spec.eval.global_model)
        main = self.federation.population.world.is_main
        if main:
            self.run_dir.append_metrics(line)
        self.records.append(line)
        if self.inertia is not None:
            rows = self.inertia.drain()
            if main:
                self.run_dir.append_inertia(rows)
        out = self.resolved.spec.output
        done = record.round + 1
        if done % out.checkpoint_every == 0 or done == self.federation.rounds:
            checkpoint.save(self.run_dir, record.round, self.federation, out.keep_checkpoints)

    def finish(self) -> dict:
        fed = self.federation
        summary = summarize(
            self.resolved, self.records, str(fed.device), fed.method.summary_metrics()
        )
        summary.update(traffic_summary(self.records, fed.parameter_count, fed.method))
        summary["engine"] = fed.engine_description()
        world = fed.population.world
        summary["processes"] = world.size
        if world.is_main:
            self.run_dir.write_summary(summary)
        world.barrier()
        return summary


def summarize(
    resolved: ResolvedSpec, records: list[dict], device: str, method_summary: dict
) -> dict:
    """Final and best accuracies (in %), and which one is the method's result (decision 2)."""
    evaluated = [r for r in records if r["acc_agg"] is not None]
    last = evaluated[-1]
    best = {}
    for key in ("acc_local", "acc_agg"):
        top = max(evaluated, key=lambda r, k=key: r[k])
        best[key] = {"value": top[key], "round": top["round"]}
    metric = resolved.method_cls.final_accuracy
    return {
        "method": resolved.spec.method.name,
        "dataset": resolved.spec.data.dataset,
        "model": resolved.spec.model.name,
        "seed": resolved.spec.seed,
        "rounds": len(records),
        "final_metric": metric,
        "final_accuracy": last[metric],
        "best_accuracy": best[metric]["value"],
        "final": {"acc_local": last["acc_local"], "acc_agg": last["acc_agg"]},
        "best": best,
        "final_acc_clients": last[f"{metric}_clients"],
        "client_std": float(np.std(last[f"{metric}_clients"])),
        "wall_seconds": round(sum(r["seconds"] for r in records), 3),
        "device": device,
        **method_summary,
    }


def traffic_summary(records: list[dict], parameters: int, method) -> dict:
    """Total bits over the run, and uplink bits per model parameter per participant-round."""
    uplink = sum(r.get("uplink_bits", 0.0) for r in records)
    downlink = sum(r.get("downlink_bits", 0.0) for r in records)
    participant_rounds = sum(r["participants"] for r in records)
    bpp = uplink / (parameters * participant_rounds) if participant_rounds else None
    return {
        "uplink_bits": uplink,
        "downlink_bits": downlink,
        "uplink_bpp": bpp,
        "one_time_bits": float(method.one_time_bits()),
        "parameters": parameters,
    }
