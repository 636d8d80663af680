"""Synthetic stand-ins: the real dataset's shape and transforms, fixed pixels, learnable classes."""

import pytest
import torch

from fedlab_cli.data import augment, synthetic
from fedlab_cli.data.registry import DATASETS, load_dataset
from fedlab_cli.engine.federation import run
from fedlab_cli.engine.session import RunSession


@pytest.fixture(scope="module")
def cifar10_like():
    return load_dataset("synthetic_cifar10", "/nonexistent", download=False)


def test_variants_copy_the_real_datasets_shape(cifar10_like):
    for real in ("cifar10", "cifar100", "tinyimagenet"):
        fake, info = DATASETS[f"synthetic_{real}"], DATASETS[real]
        assert (fake.num_classes, fake.image_shape, fake.train_pool, fake.test_pool) == (
            info.num_classes,
            info.image_shape,
            info.train_pool,
            info.test_pool,
        )
        assert augment.train_transform(fake.name, True) is augment.train_transform(real, True)
        assert augment.test_transform(fake.name) is augment.test_transform(real)
    ds = cifar10_like
    assert ds.name == "synthetic_cifar10" and ds.num_classes == 10
    assert ds.train_images.shape == (50000, 3, 32, 32) and ds.train_images.dtype == torch.uint8
    assert ds.test_images.shape == (10000, 3, 32, 32)
    assert torch.equal(ds.train_labels.bincount(), torch.full((10,), 5000))
    assert torch.equal(ds.test_labels.bincount(), torch.full((10,), 1000))


def test_generation_is_deterministic_and_seeded():
    a = synthetic.make_synthetic("x", (1, 8, 8), 3, 50, 20, seed=4)
    b = synthetic.make_synthetic("x", (1, 8, 8), 3, 50, 20, seed=4)
    c = synthetic.make_synthetic("x", (1, 8, 8), 3, 50, 20, seed=5)
    for key in ("train_images", "train_labels", "test_images", "test_labels"):
        assert torch.equal(getattr(a, key), getattr(b, key)), key
    assert not torch.equal(a.train_images, c.train_images)
    assert a.train_labels.tolist() != sorted(a.train_labels.tolist())  # shuffled


def test_images_are_half_template_half_noise():
    """Re-derive the templates from the same generator and check every pixel's bounds."""
    ds = synthetic.make_synthetic("x", (3, 8, 8), 4, 64, 16, seed=9)
    templates = synthetic.class_templates(4, (3, 8, 8), torch.Generator().manual_seed(9))
    base = (templates[ds.train_labels] // 2).int()
    offset = ds.train_images.int() - base  # = noise // 2, in 0..127
    assert offset.min() >= 0 and offset.max() <= 127
    assert 50 < offset.float().mean() < 77  # uniform noise: mean 63.5
    assert len(offset.unique()) > 100  # no two images alike


def test_classes_are_learnable(cifar10_like):
    """Nearest class mean (computed on the train pool) classifies the test pool well."""
    ds = cifar10_like
    x = ds.train_images[:5000].flatten(1).float()
    y = ds.train_labels[:5000]
    means = torch.stack([x[y == k].mean(0) for k in range(10)])
    test = ds.test_images[:1000].flatten(1).float()
    predicted = torch.cdist(test, means).argmin(1)
    assert (predicted == ds.test_labels[:1000]).float().mean() > 0.9


def test_a_run_on_synthetic_data(make_spec, tmp_path):
    spec = make_spec(
        data={"dataset": "synthetic_cifar100", "num_clients": 2, "train_per_client": 20},
        federation={"rounds": 1},
        training={"local_epochs": 1, "batch_size": 20},
    )
    session = RunSession.start(spec, tmp_path / "run")
    run(session.federation, on_round=[session.on_round])
    summary = session.finish()
    assert summary["dataset"] == "synthetic_cifar100"
    assert session.federation.data.dataset.image_shape == (3, 32, 32)
    assert len(summary["final_acc_clients"]) == 2
