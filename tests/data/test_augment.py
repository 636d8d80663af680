"""Batched on-device transforms against per-sample references and torchvision."""

from __future__ import annotations

import pytest
import torch
import torchvision.transforms.functional as TF
from support import HostReadWatch
from torchvision.transforms import InterpolationMode

from fedlab_cli.data import augment
from fedlab_cli.errors import FedlabError

DATASETS = ("cifar10", "cifar100", "tinyimagenet", "digits")
SHAPES = {"cifar10": (3, 32, 32), "cifar100": (3, 32, 32), "tinyimagenet": (3, 64, 64)}
SHAPES["digits"] = (1, 8, 8)
MEAN = torch.tensor([0.507, 0.487, 0.441]).view(1, 3, 1, 1)
STD = torch.tensor([0.267, 0.256, 0.276]).view(1, 3, 1, 1)


def _images(batch: int, shape: tuple[int, int, int], seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, *shape), dtype=torch.uint8, generator=g)


def test_flip_matches_per_sample_reference() -> None:
    images = _images(64, (3, 8, 8))
    mask = augment.random_flips(64, torch.Generator().manual_seed(3), images.device)
    assert 0 < int(mask.sum()) < 64
    out = augment.horizontal_flip(images, mask)
    for b in range(64):
        expected = images[b].flip(-1) if mask[b] else images[b]
        assert torch.equal(out[b], expected)


def test_rotation_by_zero_is_identity() -> None:
    images = _images(4, (3, 32, 32))
    assert torch.equal(augment.rotate(images, torch.zeros(4)), images)


def test_rotation_by_90_is_counter_clockwise_rot90() -> None:
    images = _images(3, (3, 32, 32))
    counter_clockwise = torch.rot90(images, 1, dims=(-2, -1))
    # torch.rot90 over (H, W) moves the top-right corner to the top-left: counter-clockwise.
    assert torch.equal(counter_clockwise[:, :, 0, 0], images[:, :, 0, -1])
    assert torch.equal(augment.rotate(images, torch.full((3,), 90.0)), counter_clockwise)
    clockwise = torch.rot90(images, -1, dims=(-2, -1))
    assert torch.equal(augment.rotate(images, torch.full((3,), -90.0)), clockwise)
    float_images = images.float() / 255
    assert torch.equal(
        augment.rotate(float_images, torch.full((3,), 90.0)), counter_clockwise / 255
    )


@pytest.mark.parametrize("side", [8, 32, 64])
def test_rotation_agrees_with_torchvision(side: int) -> None:
    images = _images(12, (3, side, side), seed=side)
    angles = torch.tensor([15.0, -15.0, 7.3, -11.9, 3.1, -0.7, 14.99, -4.2, 9.0, -9.0, 12.5, -1.0])
    ours = augment.rotate(images, angles)
    agree = total = 0
    for b in range(len(images)):
        ref = TF.rotate(images[b], float(angles[b]), interpolation=InterpolationMode.NEAREST)
        agree += int((ours[b] == ref).all(0).sum())
        total += side * side
    # Measured: 100 % of pixels agree (same inverse map, same nearest rounding). Allow 98 %.
    assert agree / total >= 0.98


def test_crop_equals_window_of_zero_padded_input() -> None:
    images = torch.randn(16, 3, 32, 32)
    tops, lefts = augment.random_offsets(16, 8, torch.Generator().manual_seed(5), images.device)
    assert int(tops.min()) >= 0 and int(tops.max()) <= 8 and int(lefts.max()) <= 8
    out = augment.padded_crop(images, 4, tops, lefts)
    padded = torch.zeros(16, 3, 40, 40)
    padded[:, :, 4:36, 4:36] = images
    for b in range(16):
        top, left = int(tops[b]), int(lefts[b])
        assert torch.equal(out[b], padded[b, :, top : top + 32, left : left + 32])


def test_crop_offsets_cover_zero_to_eight() -> None:
    tops, lefts = augment.random_offsets(2000, 8, torch.Generator().manual_seed(0), "cpu")
    assert set(tops.tolist()) == set(range(9)) and set(lefts.tolist()) == set(range(9))


def test_angles_are_uniform_in_plus_minus_15() -> None:
    angles = augment.random_angles(5000, 15.0, torch.Generator().manual_seed(0), "cpu")
    assert float(angles.min()) >= -15.0 and float(angles.max()) <= 15.0
    assert float(angles.min()) < -14.5 and float(angles.max()) > 14.5
    assert abs(float(angles.mean())) < 0.5


def test_normalization_constants_are_the_reference_ones() -> None:
    assert augment.CIFAR100_MEAN == (0.507, 0.487, 0.441)
    assert augment.CIFAR100_STD == (0.267, 0.256, 0.276)
    images = _images(5, (3, 32, 32))
    expected = (images.float() / 255 - MEAN) / STD
    for name in ("cifar100", "tinyimagenet"):
        assert torch.allclose(augment.test_transform(name)(images, None), expected, atol=1e-6)
        assert torch.equal(
            augment.train_transform(name, augment=False)(images, None),
            augment.test_transform(name)(images, None),
        )


@pytest.mark.parametrize("name", ["cifar10", "digits"])
def test_to_tensor_only_datasets(name: str) -> None:
    images = _images(5, SHAPES[name])
    expected = images.float() / 255
    g = torch.Generator().manual_seed(0)
    assert torch.equal(augment.train_transform(name, augment=True)(images, g), expected)
    assert torch.equal(augment.test_transform(name)(images, None), expected)


def test_cifar100_train_pipeline_matches_step_by_step_reference() -> None:
    """Replays the same draws (flip, angle, offsets) through the pieces in reference order."""
    images = _images(32, (3, 32, 32))
    out = augment.train_transform("cifar100", augment=True)(
        images, torch.Generator().manual_seed(7)
    )

    g = torch.Generator().manual_seed(7)
    flips = augment.random_flips(32, g, images.device)
    angles = augment.random_angles(32, 15.0, g, images.device)
    tops, lefts = augment.random_offsets(32, 8, g, images.device)
    expected = []
    for b in range(32):
        img = images[b].flip(-1) if flips[b] else images[b]
        img = TF.rotate(img, float(angles[b]), interpolation=InterpolationMode.NEAREST, fill=0)
        img = (img.float() / 255 - MEAN[0]) / STD[0]
        img = torch.nn.functional.pad(img, (4, 4, 4, 4))
        expected.append(
            img[:, int(tops[b]) : int(tops[b]) + 32, int(lefts[b]) : int(lefts[b]) + 32]
        )
    assert torch.allclose(out, torch.stack(expected), atol=1e-6)
    # Rotation fill and crop padding differ: filled pixels are (0 - mean) / std, padding is 0.
    assert bool((out == 0).any())


def test_tinyimagenet_train_has_no_crop() -> None:
    images = torch.full((8, 3, 64, 64), 255, dtype=torch.uint8)
    angles_g = torch.Generator().manual_seed(1)
    augment.random_flips(8, angles_g, images.device)
    angles = augment.random_angles(8, 15.0, angles_g, images.device)
    out = augment.train_transform("tinyimagenet", augment=True)(
        images, torch.Generator().manual_seed(1)
    )
    white = (1 - MEAN) / STD
    centre = out[:, :, 24:40, 24:40]  # never reached by a 15-degree corner, never cropped away
    assert torch.allclose(centre, white.expand_as(centre), atol=1e-6)
    assert bool((angles.abs() > 1).any())
    assert not bool((out == 0).any())  # no zero padding from a crop


@pytest.mark.parametrize("name", DATASETS)
def test_same_seed_same_output_dtype_device_shape(name: str) -> None:
    images = _images(6, SHAPES[name], seed=11)
    transform = augment.train_transform(name, augment=True)
    a = transform(images, torch.Generator().manual_seed(42))
    b = transform(images, torch.Generator().manual_seed(42))
    assert torch.equal(a, b)
    assert a.dtype == torch.float32 and a.device == images.device and a.shape == images.shape
    if name in ("cifar100", "tinyimagenet"):
        c = transform(images, torch.Generator().manual_seed(43))
        assert not torch.equal(a, c)


def test_resuming_from_saved_generator_state_reproduces_the_stream() -> None:
    images = _images(6, (3, 32, 32))
    transform = augment.train_transform("cifar100", augment=True)
    g = torch.Generator().manual_seed(0)
    transform(images, g)
    state = g.get_state()
    expected = transform(images, g)
    resumed = torch.Generator()
    resumed.set_state(state)
    assert torch.equal(transform(images, resumed), expected)


def test_rejects_unknown_dataset_and_non_uint8_input() -> None:
    with pytest.raises(FedlabError, match="xyz"):
        augment.train_transform("xyz", augment=True)
    with pytest.raises(ValueError, match="uint8"):
        augment.test_transform("cifar10")(torch.zeros(2, 3, 32, 32), None)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_runs_on_cuda_with_cuda_generator() -> None:
    images = _images(8, (3, 32, 32)).cuda()
    g = torch.Generator(device="cuda").manual_seed(0)
    out = augment.train_transform("cifar100", augment=True)(images, g)
    assert out.device == images.device and out.dtype == torch.float32


@pytest.mark.parametrize("dataset", ["cifar100", "tinyimagenet"])
def test_augmentation_reads_nothing_back_to_the_host(monkeypatch, dataset):
    """Flips, rotations and crops of a batch draw and apply on the device, with no host sync."""
    watch = HostReadWatch(monkeypatch)
    pipeline = watch.hot(augment.train_transform(dataset, True))
    side = 64 if dataset == "tinyimagenet" else 32
    images = torch.randint(0, 256, (6, 3, side, side), dtype=torch.uint8)
    out = pipeline(images, torch.Generator().manual_seed(0))
    assert out.shape == images.shape and watch.reads == []
