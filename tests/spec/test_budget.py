"""The partition's memory is checked against what is available, before allocating."""

import numpy as np
import pytest

from fedlab_cli.data.partition import split_clients
from fedlab_cli.errors import FedlabError
from fedlab_cli.spec import budget
from fedlab_cli.spec.load import apply_overrides, resolve

BASE = {
    "data": {"dataset": "cifar10", "num_clients": 100},
    "model": {"name": "vgg6"},
    "method": {"name": "fedavg"},
}


def test_a_billion_clients_is_refused_naming_the_field():
    with pytest.raises(FedlabError) as err:
        resolve(apply_overrides(BASE, ["data.num_clients=1000000000"]))
    message = str(err.value)
    assert message.startswith("data.num_clients: 1000000000 clients x (100 + 400) samples need")
    assert message.endswith("(got 1000000000)") and "memory available" in message


def test_the_check_uses_the_memory_given():
    spec = resolve(apply_overrides(BASE, [])).spec
    need = budget.partition_bytes(100, 100, 400, 10)
    budget.check_partition_fits(spec, available=need)
    with pytest.raises(FedlabError, match=r"more than the 1\.0 KiB of memory available"):
        budget.check_partition_fits(spec, available=1024)


def test_the_estimate_is_a_lower_bound_of_the_real_arrays():
    """Measured: the index arrays alone (8 bytes a position) and the Dirichlet draw fit in the
    estimate, so the check can only refuse what could not have run."""
    labels = np.repeat(np.arange(10), 100)
    splits = split_clients(labels, labels, 50, 0.5, 30, 20, seed=0)
    arrays = sum(a.nbytes for a in (*splits.train, *splits.test)) + 50 * 10 * 8
    assert arrays <= budget.partition_bytes(50, 30, 20, 10)


def test_available_memory_reads_the_kernel():
    found = budget.available_memory()
    assert found is None or found > 0
