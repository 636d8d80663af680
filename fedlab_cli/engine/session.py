"""Start, resume and finish a run: validation first, then the run directory, then rounds.

Everything that can reject the input (spec, dataset files, partition size, model shape) runs
before the run directory is created, so bad input leaves nothing behind.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fedlab_cli.data.partition import ClientSplits
from fedlab_cli.engine import checkpoint
from fedlab_cli.engine.build import build_federation
from fedlab_cli.engine.federation import Federation, RoundRecord
from fedlab_cli.engine.inertia import InertiaRecorder, attach_inertia
from fedlab_cli.engine.rundir import PARTITION, SPEC, RunDir
from fedlab_cli.engine.world import env_rank
from fedlab_cli.errors import FedlabError
from fedlab_cli.spec.load import ResolvedSpec, load_spec
from fedlab_cli.tracking import Logger, check_available, open_loggers

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
    loggers: list[Logger] = field(default_factory=list)

    @classmethod
    def start(
        cls, resolved: ResolvedSpec, path: Path, progress: Progress | None = None
    ) -> RunSession:
        """Validate everything, then create the run directory at ``path`` (rank 0 of a run
        over several processes; the others write only their checkpoint slices)."""
        run_dir = RunDir(path)
        occupied = path.exists() and (not path.is_dir() or any(path.iterdir()))
        if occupied and env_rank() == 0:  # the other ranks see what rank 0 made (its lock)
            raise FedlabError(
                f"output.dir: {str(path)!r} already exists; choose another or resume it "
                f"with `fedlab run --resume {path}`"
            )
        check_available(resolved.spec.output.loggers)
        federation = build_federation(resolved, progress=progress)
        inertia = attach_inertia(federation, resolved.spec.inertia.ref_rounds)
        world = federation.population.world
        loggers: list[Logger] = []
        if world.is_main:
            run_dir.create(resolved.to_yaml(), federation.splits.to_json())
            loggers = open_loggers(resolved, path, [], [])
        world.barrier()
        return cls(resolved, run_dir, federation, [], federation.notice, inertia, loggers)

    @classmethod
    def resume(cls, path: Path, progress: Progress | None = None) -> RunSession:
        """Continue a run from its last intact checkpoint, with the numbers an uninterrupted run
        gives. Damage is named and worked around: an edited spec.yaml or a damaged
        partition.json is refused; a damaged newest checkpoint means resuming from the newest
        intact one; a damaged line in metrics.jsonl means resuming from before it, so the
        rounds it held are redone (to the same numbers) rather than lost."""
        run_dir = RunDir(path)
        if not run_dir.is_run:
            raise FedlabError(f"--resume: {str(path)!r} is not a run directory (no {SPEC})")
        run_dir.verify()
        if not run_dir.has_manifest and env_rank() == 0:
            run_dir.write_manifest()  # a run dir from before manifests: adopt it as it is
        resolved = load_spec(path / SPEC)
        check_available(resolved.spec.output.loggers)
        splits = ClientSplits.from_json(json.loads((path / PARTITION).read_text()))
        state, notices = resume_point(run_dir)
        federation = build_federation(
            resolved, splits=splits, progress=progress, calibrate=state is None
        )
        notice = "; ".join(n for n in [federation.notice, *notices] if n) or None
        inertia = None
        if state is None or state["observers"]:  # runs from before inertia resume without it
            inertia = attach_inertia(federation, resolved.spec.inertia.ref_rounds)
        if state is not None:
            pop = federation.population
            held = checkpoint.load(run_dir, state, pop.first, pop.first + pop.num_clients)
            federation.load_state_dict(held)
        world = federation.population.world
        loggers: list[Logger] = []
        if world.is_main:
            records = run_dir.keep_metrics_through(federation.next_round - 1)
            if inertia is not None:
                run_dir.keep_inertia_through(federation.next_round - 1)
            loggers = open_loggers(resolved, path, records, run_dir.inertia_rows())
        else:
            records = run_dir.metrics()[: federation.next_round]
        world.barrier()
        return cls(resolved, run_dir, federation, records, notice, inertia, loggers)

    def on_round(self, record: RoundRecord) -> None:
        """Log the round; checkpoint every ``output.checkpoint_every`` rounds and at the end."""
        line = record.to_json(with_global=self.resolved.spec.eval.global_model)
        main = self.federation.population.world.is_main
        if main:
            self.run_dir.append_metrics(line)
        self.records.append(line)
        rows: list = []
        if self.inertia is not None:
            rows = self.inertia.drain()
            if main:
                self.run_dir.append_inertia(rows)
        for logger in self.loggers:  # before the checkpoint: a kept round is in every logger
            logger.log_round(line, [row._asdict() for row in rows])
        out = self.resolved.spec.output
        done = record.round + 1
        if done % out.checkpoint_every == 0 or done == self.federation.rounds:
            self.save_checkpoint(record.round)

    def save_checkpoint(self, round_index: int) -> None:
        """A checkpoint after ``round_index`` (every process its slice, rank 0 the manifest)."""
        keep = self.resolved.spec.output.keep_checkpoints
        checkpoint.save(self.run_dir, round_index, self.federation, keep)

    def finish(self, diverged: str | None = None) -> dict:
        """Write summary.json: ``status`` is ``complete``, or ``diverged`` (with the message)
        when a loss became NaN or infinite — the last good checkpoint stays resumable."""
        fed = self.federation
        summary = summarize(
            self.resolved, self.records, str(fed.device), fed.method.summary_metrics()
        )
        summary["status"] = "diverged" if diverged else "complete"
        if diverged:
            summary["diverged"] = diverged
        summary.update(traffic_summary(self.records, fed.parameter_count, fed.method))
        summary["engine"] = fed.engine_description()
        world = fed.population.world
        summary["processes"] = world.size
        if world.is_main:
            self.run_dir.write_summary(summary)
        self.close_loggers(summary)
        world.barrier()
        return summary

    def close_loggers(self, summary: dict | None = None) -> None:
        """Flush and close the trackers (also when a run stops early: it stays resumable)."""
        loggers, self.loggers = self.loggers, []
        for logger in loggers:
            logger.close(summary)


def resume_point(run_dir: RunDir) -> tuple[dict | None, list[str]]:
    """The checkpoint to resume from (None: from the start) and what was worked around."""
    notices: list[str] = []
    has_any = bool(run_dir.checkpoints()) or any(
        name.startswith("checkpoints/round_") for name in run_dir.manifest()
    )
    intact = run_dir.latest_intact_checkpoint()
    if has_any and intact is None:
        damage = run_dir.checkpoint_damage()
        named = f"{damage[0].file}: {damage[0].problem}" if damage else "none loads"
        raise FedlabError(
            f"--resume: no checkpoint of {str(run_dir.path)!r} is intact ({named}); "
            "start the run again"
        )
    if intact is not None and intact.damaged_newer:
        newest = intact.damaged_newer[0]
        notices.append(
            f"{newest.file} is damaged ({newest.problem}); resuming from "
            f"{intact.path.name} (round {intact.round})"
        )
    done = intact.round if intact is not None else -1
    log = run_dir.read_metrics()
    missing = log.missing_rounds(done)
    if missing:  # a damaged line lost a logged round: go back to before it and redo
        earlier = run_dir.latest_intact_checkpoint(before=missing[0])
        damage = log.first_damage
        where = damage.problem if damage else f"round {missing[0]} has no line"
        redo = earlier.round + 1 if earlier is not None else 0
        notices.append(f"{log.file}: {where}; rounds {redo}… are redone from their checkpoint")
        intact = earlier
    return (intact.state if intact is not None else None), notices


def summarize(
    resolved: ResolvedSpec, records: list[dict], device: str, method_summary: dict
) -> dict:
    """Final and best accuracies (in %), and which one is the method's result (decision 2);
    None where no round was evaluated (a run that diverged in its first rounds); ``acc_global``
    and its variants (``acc_global_<name>``) too where the run records them (``eval.global``)."""
    evaluated = [r for r in records if r["acc_agg"] is not None]
    metric = resolved.method_cls.final_accuracy
    if not evaluated:
        keys = ["acc_local", "acc_agg"]
        last = {**dict.fromkeys(keys), f"{metric}_clients": []}
        best = {k: {"value": None, "round": None} for k in keys}
    else:
        last = evaluated[-1]
        keys = ["acc_local", "acc_agg"] + [k for k in last if k.startswith("acc_global")]
        best = {}
        for key in keys:
            top = max(evaluated, key=lambda r, k=key: r[k])
            best[key] = {"value": top[key], "round": top["round"]}
    return {
        "method": resolved.spec.method.name,
        "dataset": resolved.spec.data.dataset,
        "model": resolved.spec.model.name,
        "seed": resolved.spec.seed,
        "rounds": len(records),
        "final_metric": metric,
        "final_accuracy": last[metric],
        "best_accuracy": best[metric]["value"],
        "final": {key: last[key] for key in keys},
        "best": best,
        "final_acc_clients": last[f"{metric}_clients"],
        "client_std": float(np.std(last[f"{metric}_clients"])) if evaluated else None,
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
