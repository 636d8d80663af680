"""FedAvg (McMahan et al. 2017): the engine's default behaviour, unchanged."""

from fedlab_cli.engine.method import Method


class FedAvg(Method):
    """Average every parameter and BN statistic over the participants; all clients get the mean."""
