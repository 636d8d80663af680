"""Stacked client state and the weighted mean over clients."""

import torch

from fedlab_cli.engine.population import Population, weighted_mean
from fedlab_cli.models import build


def test_replicate_gives_every_client_the_same_model():
    model = build("small_cnn", 10, in_channels=1)
    pop = Population.replicate(model, 3, torch.device("cpu"))
    assert pop.num_clients == 3
    for name, p in model.named_parameters():
        assert pop.params[name].shape == (3, *p.shape)
        for c in range(3):
            assert torch.equal(pop.params[name][c], p.detach())
    assert pop.buffers["features.1.num_batches_tracked"].shape == (3,)


def test_weighted_mean_equals_hand_computed_average():
    stacked = torch.tensor([[1.0, 2.0], [3.0, 6.0], [10.0, 20.0], [-4.0, 0.0]])
    clients = torch.tensor([0, 1, 3])
    weights = torch.tensor([1.0, 3.0, 4.0], dtype=torch.float64)
    # (1*[1,2] + 3*[3,6] + 4*[-4,0]) / 8 = ([1+9-16, 2+18+0]) / 8
    expected = torch.tensor([-6.0 / 8, 20.0 / 8])
    torch.testing.assert_close(weighted_mean(stacked, clients, weights), expected)


def test_index_is_a_long_tensor_of_the_clients_on_the_populations_device():
    pop = Population.replicate(build("small_cnn", 3), 5, torch.device("cpu"))
    index = pop.index([4, 0, 2])
    assert index.dtype == torch.long and index.device == pop.device
    assert index.tolist() == [4, 0, 2]
