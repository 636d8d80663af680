"""Run directories: contents, atomic completion, and resume giving the uninterrupted numbers."""

import json

import pytest
import torch
import yaml
from support import Crash, crash_after, strip_time

from fedlab_cli.engine.federation import run
from fedlab_cli.engine.session import RunSession


def run_to_end(session):
    run(session.federation, on_round=[session.on_round])
    return session.finish()


@pytest.mark.parametrize("method", ["fedavg", "fedbn"])
def test_resume_equals_uninterrupted_run(make_spec, tmp_path, method):
    spec = make_spec(
        method={"name": method},
        federation={"rounds": 5},
        output={"checkpoint_every": 2, "keep_checkpoints": 0},
    )
    full = RunSession.start(spec, tmp_path / "full")
    full_summary = run_to_end(full)

    broken = RunSession.start(spec, tmp_path / "broken")
    with pytest.raises(Crash):  # dies after round 2; its last checkpoint is round 1
        run(broken.federation, on_round=[broken.on_round, crash_after(2)])
    assert not (tmp_path / "broken" / "summary.json").exists()
    assert len(broken.run_dir.metrics()) == 3

    resumed = RunSession.resume(tmp_path / "broken")
    assert resumed.federation.next_round == 2
    resumed_summary = run_to_end(resumed)

    assert strip_time(resumed.run_dir.metrics()) == strip_time(full.run_dir.metrics())
    a = final_population(tmp_path / "full")
    b = final_population(tmp_path / "broken")
    for group in ("params", "buffers"):
        for name, tensor in a[group].items():
            assert torch.equal(tensor, b[group][name]), name
    assert resumed_summary["final_accuracy"] == full_summary["final_accuracy"]


def final_population(run_dir):
    """The population of the last checkpoint: its manifest names the client slices."""
    manifest = torch.load(run_dir / "checkpoints" / "round_0004.pt", weights_only=True)
    (shard,) = manifest["shards"]
    return torch.load(run_dir / "checkpoints" / "shards" / shard, weights_only=True)["population"]


def test_run_dir_contents(make_spec, tmp_path):
    spec = make_spec(
        federation={"rounds": 4}, output={"checkpoint_every": 3, "keep_checkpoints": 1}
    )
    session = RunSession.start(spec, tmp_path / "run")
    summary = run_to_end(session)
    root = tmp_path / "run"
    resolved = yaml.safe_load((root / "spec.yaml").read_text())
    assert resolved["training"]["momentum"] == 0.9  # defaults are written out
    assert resolved["method"] == {"name": "fedavg"}
    partition = json.loads((root / "partition.json").read_text())
    assert len(partition["clients"]) == 4
    assert all(len(c["train"]) == 30 and len(c["test"]) == 20 for c in partition["clients"])
    lines = (root / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["round"] for line in lines] == [0, 1, 2, 3]
    assert {"round", "loss", "acc_local", "acc_agg", "seconds"} <= set(json.loads(lines[0]))
    # checkpoints at round 2 (every 3) and at the end; only the newest is kept
    assert [p.name for p in session.run_dir.checkpoints()] == ["round_0003.pt"]
    assert json.loads((root / "summary.json").read_text()) == summary
    assert not list(root.rglob("*.tmp"))


def test_eval_every_skips_rounds_but_not_the_last(make_spec, tmp_path):
    session = RunSession.start(
        make_spec(federation={"rounds": 5}, eval={"every": 2}), tmp_path / "r"
    )
    run_to_end(session)
    evaluated = [r["round"] for r in session.records if r["acc_agg"] is not None]
    assert evaluated == [1, 3, 4]


def test_participation_samples_a_fixed_share_each_round(make_spec, tmp_path):
    spec = make_spec(data={"num_clients": 10}, federation={"rounds": 2, "participation": 0.3})
    fed = RunSession.start(spec, tmp_path / "r").federation
    first, second = fed.participants(0), fed.participants(1)
    assert len(first) == len(second) == 3 and first != second
    assert fed.participants(0) == first  # reproducible from seed and round alone
