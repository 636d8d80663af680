"""Helpers shared by test modules (importable as ``support``: tests/ is on pytest's path)."""

import torch

from fedlab_cli.engine.method import RunContext


class Crash(Exception):
    """Stands for a run dying mid-way (power cut, OOM kill)."""


def crash_after(round_index: int):
    """An ``on_round`` callback that kills the run once ``round_index`` is logged."""

    def callback(record):
        if record.round == round_index:
            raise Crash

    return callback


def strip_time(records: list[dict]) -> list[dict]:
    """Metric lines without their wall-clock field, for equality across runs."""
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records]


def digits_context(dataset: str = "digits", rounds: int = 30) -> RunContext:
    """The RunContext of a small-CNN run on CPU, for calling ``Method.setup`` directly."""
    return RunContext(
        rounds=rounds,
        local_epochs=5,
        dataset=dataset,
        num_classes=10,
        model="small_cnn",
        image_shape=(1, 8, 8),
        seed=0,
        device=torch.device("cpu"),
    )
