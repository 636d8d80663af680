"""fedlab against the official LIPS code's own results (../shared/golden, see its README).

FedBN and LIPS (with ``score_precision: fp16``, the official code's stored gradient), ResNet6,
the real 10-class Tiny-ImageNet sample, 4 clients, 6 rounds, every client starting from the
reference's exported initial weights through ``model.init``, 1 CPU thread, the sequential
strategy and the contiguous layout. Checked in every round: the partition, every client's
accuracy after local training and after aggregation, and every client's every tensor after
aggregation (nonzero count exact; sums, absolute sums and squared sums to 1e-5 relative).

Float rounding depends on the torch version, the CPU kernels and the thread count, and this
setting amplifies it round by round (golden README, portability): all 6 rounds are checked
only where ``environment`` matches the one the files record; elsewhere round 0's accuracies
(the test says which it checked).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch

from fedlab_cli.engine.federation import run
from fedlab_cli.engine.session import RunSession
from fedlab_cli.spec.load import resolve

GOLDEN = Path(__file__).resolve().parents[2].parent / "shared" / "golden"
SAMPLE = GOLDEN.parent / "data" / "tiny-imagenet-200-sample"
REL = 1e-5

pytestmark = pytest.mark.skipif(
    not (GOLDEN / "fedbn.json").is_file() or not (SAMPLE / "wnids.txt").is_file(),
    reason=f"golden files or the Tiny-ImageNet sample not found beside the repository ({GOLDEN})",
)


def environment_matches(recorded: dict) -> bool:
    return (
        torch.__version__ == recorded["torch"]
        and torch.backends.cpu.get_cpu_capability() == recorded["cpu_capability"]
        and torch.get_num_threads() == recorded["threads"]
    )


def checksum(t: torch.Tensor) -> list:
    x = t.detach().double()
    return [float(x.sum()), float(x.abs().sum()), float((x * x).sum()), int((t != 0).sum())]


def failing_checksums(state: dict[str, torch.Tensor], wanted: list[dict]) -> list[str]:
    """``client:tensor:field`` for every checksum outside the golden README's tolerance."""
    bad = []
    for c, tensors in enumerate(wanted):
        for name, (s, a, q, nz) in tensors.items():
            got = checksum(state[name][c])
            if abs(got[0] - s) > REL * a + 1e-12:
                bad.append(f"{c}:{name}:sum")
            if abs(got[1] - a) > REL * abs(a) + 1e-12:
                bad.append(f"{c}:{name}:abs_sum")
            if abs(got[2] - q) > REL * abs(q) + 1e-12:
                bad.append(f"{c}:{name}:sq_sum")
            if got[3] != nz:
                bad.append(f"{c}:{name}:nonzero")
    return bad


def run_golden(
    name: str, tmp_path: Path, extra_method: dict
) -> tuple[dict, list[dict], Path, list]:
    golden = json.loads((GOLDEN / f"{name}.json").read_text())
    root = tmp_path / "data"
    root.mkdir()
    (root / "tiny-imagenet-200").symlink_to(SAMPLE, target_is_directory=True)
    raw = json.loads(json.dumps(golden["fedlab_spec"]))
    raw["data"]["root"] = str(root)
    raw["model"]["init"] = str(GOLDEN / golden["init"]["file"])
    raw["method"].update(extra_method)
    raw["output"] = {"dir": str(tmp_path / "run")}
    session = RunSession.start(resolve(raw), tmp_path / "run")
    states = []

    def keep_state(record):
        states.append(
            {n: t.detach().clone() for n, t in session.federation.population.tensors().items()}
        )

    run(session.federation, on_round=[session.on_round, keep_state])
    return golden, session.records, tmp_path / "run", states


@pytest.mark.parametrize(
    "name, extra_method",
    [("fedbn", {}), ("lips", {"score_precision": "fp16"})],
    ids=["fedbn", "lips-fp16"],
)
def test_matches_the_official_code(name, extra_method, tmp_path, one_thread):
    golden, records, run_dir, states = run_golden(name, tmp_path, extra_method)
    partition = json.loads((run_dir / "partition.json").read_text())["clients"]
    assert [c["train"] for c in partition] == golden["partition"]["train"]
    assert [c["test"] for c in partition] == golden["partition"]["test"]

    full = environment_matches(golden["environment"])
    checked = golden["rounds"] if full else golden["rounds"][:1]
    for want, got, state in zip(checked, records, states, strict=False):
        r = want["round"]
        for key in ("acc_local_clients", "acc_agg_clients"):
            assert got[key] == pytest.approx(want[key], abs=1e-6), (name, r, key)
        if full:
            assert failing_checksums(state, want["checksums_agg"]) == [], (name, r)
    if not full:
        warnings.warn(
            f"golden {name}: environment differs from the recorded one "
            f"({golden['environment']['torch']}, {golden['environment']['cpu_capability']}, "
            f"1 thread): checked round 0's accuracies only",
            stacklevel=1,
        )


def test_lips_default_fp32_score_differs_from_the_code_only_by_its_rounding(tmp_path, one_thread):
    """Decision 4: with the fp32 score, round 0 matches the code up to local training (the
    score's precision acts only at sparsification) and every round keeps the code's nonzero
    counts (the same k per tensor), while some masks differ."""
    golden, records, _, states = run_golden("lips", tmp_path, {})
    if not environment_matches(golden["environment"]):
        pytest.skip("needs the recorded environment: per-entry differences are rounding-deep")
    first = golden["rounds"][0]
    assert records[0]["acc_local_clients"] == pytest.approx(first["acc_local_clients"], abs=1e-6)
    for want, state in zip(golden["rounds"], states, strict=True):
        for c, tensors in enumerate(want["checksums_agg"]):
            for tensor, (*_, nonzero) in tensors.items():
                assert int((state[tensor][c] != 0).sum()) == nonzero, (want["round"], c, tensor)
    middle = "layers.1.0.conv1.weight"
    assert failing_checksums(states[0], [{middle: t[middle]} for t in first["checksums_agg"]])
