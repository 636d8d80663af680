"""Separate: each client trains alone from the shared initialisation; nothing is aggregated."""

from typing import ClassVar

from fedlab_cli.engine.method import Method


class Separate(Method):
    description: ClassVar[str] = "Separate: local training only, no aggregation"
    aggregates: ClassVar[bool] = False
    has_global_model: ClassVar[bool] = False

    def shares(self, name, role) -> bool:
        return False
