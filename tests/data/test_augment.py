"""Batched on-device transforms against per-sample references and torchvision."""

from __future__ import annotations

import pytest
import torch
import torchvision.transforms as T
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


# --- transform profiles: ssfl and fedpm (SPARSE_FL.md §1.1 step 4, §2.2) ---------------------

# Typed from riohib/SSFL@83fc11d data_preprocessing/cifar{10,100}_partitioner.py.
SSFL_CONSTANTS = {
    "cifar10": ([0.49139968, 0.48215827, 0.44653124], [0.24703233, 0.24348505, 0.26158768]),
    "cifar100": ([0.5071, 0.4867, 0.4408], [0.2675, 0.2565, 0.2761]),
}


def _pil(image: torch.Tensor):
    """A uint8 [C, H, W] tensor as the PIL image torchvision's datasets hand to transforms."""
    array = image.permute(1, 2, 0).numpy()
    return TF.to_pil_image(array[..., 0] if array.shape[-1] == 1 else array)


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_ssfl_train_equals_per_image_torchvision_crop_flip_normalize(name: str) -> None:
    """SSFL: RandomCrop(32, padding=4) -> RandomHorizontalFlip -> ToTensor -> Normalize, per PIL
    image with the same draws (torchvision draws the crop corner, then the flip)."""
    images = _images(48, (3, 32, 32), seed=3)
    out = augment.train_transform(name, True, profile="ssfl")(
        images, torch.Generator().manual_seed(9)
    )
    g = torch.Generator().manual_seed(9)
    tops, lefts = augment.random_offsets(48, 8, g, "cpu")
    flips = augment.random_flips(48, g, "cpu")
    assert 0 < int(flips.sum()) < 48 and int((tops != 4).sum()) > 0
    mean, std = SSFL_CONSTANTS[name]
    expected = []
    for b in range(48):
        img = TF.crop(TF.pad(_pil(images[b]), 4, fill=0), int(tops[b]), int(lefts[b]), 32, 32)
        if flips[b]:
            img = TF.hflip(img)
        expected.append(TF.normalize(TF.to_tensor(img), mean, std))
    torch.testing.assert_close(out, torch.stack(expected), rtol=0, atol=1e-6)
    # The padding was cropped in as black *before* normalizing: it reads -mean/std, not 0.
    black = (-torch.tensor(mean) / torch.tensor(std)).view(1, 3, 1)
    top_rows = out[tops < 4][:, :, 0]  # row 0 of an image whose crop starts inside the padding
    assert len(top_rows) and torch.allclose(top_rows, black.expand_as(top_rows))


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_ssfl_test_and_unaugmented_train_are_to_tensor_normalize(name: str) -> None:
    images = _images(6, (3, 32, 32), seed=4)
    mean, std = SSFL_CONSTANTS[name]
    expected = torch.stack([TF.normalize(TF.to_tensor(_pil(img)), mean, std) for img in images])
    test = augment.test_transform(name, profile="ssfl")(images, None)
    torch.testing.assert_close(test, expected, rtol=0, atol=1e-6)
    no_aug = augment.train_transform(name, False, profile="ssfl")
    assert no_aug is augment.test_transform(name, profile="ssfl")


def test_ssfl_constants_are_ssfls() -> None:
    assert list(augment.SSFL_CIFAR10_MEAN) == SSFL_CONSTANTS["cifar10"][0]
    assert list(augment.SSFL_CIFAR10_STD) == SSFL_CONSTANTS["cifar10"][1]
    assert list(augment.SSFL_CIFAR100_MEAN) == SSFL_CONSTANTS["cifar100"][0]
    assert list(augment.SSFL_CIFAR100_STD) == SSFL_CONSTANTS["cifar100"][1]


def test_ssfl_draws_are_offsets_then_flips() -> None:
    pipeline = augment.train_transform("cifar10", True, profile="ssfl")
    draws = pipeline.draw(20, torch.Generator().manual_seed(2), "cpu")
    g = torch.Generator().manual_seed(2)
    expected = [*augment.random_offsets(20, 8, g, "cpu"), augment.random_flips(20, g, "cpu")]
    assert len(draws) == 3 and all(torch.equal(a, b) for a, b in zip(draws, expected, strict=True))


@pytest.mark.parametrize(
    ("profile", "name", "shape"),
    [
        ("fedpm", "mnist", (1, 28, 28)),
        ("fedpm", "emnist", (1, 28, 28)),
        ("fedpm", "cifar10", (3, 32, 32)),
        ("fedpm", "cifar100", (3, 32, 32)),
        ("lips", "mnist", (1, 28, 28)),
        ("lips", "emnist", (1, 28, 28)),
    ],
)
def test_half_normalization_train_and_test(profile: str, name: str, shape) -> None:
    """ToTensor -> Normalize(mean=0.5, std=0.5) as FedPM writes it (scalars, broadcast by
    torchvision over the channels), no augmentation even when augmenting."""
    images = _images(5, shape, seed=6)
    reference = T.Compose([T.ToTensor(), T.Normalize(mean=0.5, std=0.5)])
    expected = torch.stack([reference(_pil(img)) for img in images])
    train = augment.train_transform(name, True, profile=profile)
    test = augment.test_transform(name, profile=profile)
    torch.testing.assert_close(test(images, None), expected, rtol=0, atol=1e-6)
    assert torch.equal(train(images, torch.Generator().manual_seed(0)), test(images, None))
    assert torch.equal(test(images, None)[images == 0], torch.full_like(expected[images == 0], -1))


@pytest.mark.parametrize("profile", ["lips", "ssfl", "fedpm"])
def test_digits_is_to_tensor_under_every_profile(profile: str) -> None:
    images = _images(5, (1, 8, 8))
    g = torch.Generator().manual_seed(0)
    assert torch.equal(
        augment.train_transform("digits", True, profile=profile)(images, g), images / 255.0
    )
    assert torch.equal(
        augment.test_transform("digits", profile=profile)(images, None), images / 255
    )


@pytest.mark.parametrize(("profile", "real"), [("ssfl", "cifar10"), ("fedpm", "cifar100")])
def test_synthetic_stand_ins_follow_their_dataset_under_a_profile(profile: str, real: str) -> None:
    fake = f"synthetic_{real}"
    assert augment.train_transform(fake, True, profile=profile) is augment.train_transform(
        real, True, profile=profile
    )
    assert augment.test_transform(fake, profile=profile) is augment.test_transform(
        real, profile=profile
    )


def test_default_profile_is_lips() -> None:
    assert augment.DEFAULT_PROFILE == "lips" and augment.PROFILES == ("lips", "ssfl", "fedpm")
    for name in ("cifar10", "cifar100", "tinyimagenet", "digits", "mnist"):
        assert augment.train_transform(name, True) is augment.train_transform(
            name, True, profile="lips"
        )


def test_unknown_profile_and_uncovered_dataset_are_one_line_errors() -> None:
    with pytest.raises(FedlabError) as info:
        augment.train_transform("cifar10", True, profile="fedavg")
    assert str(info.value) == (
        "data.transforms: unknown transform profile 'fedavg' (known: fedpm, lips, ssfl)"
    )
    with pytest.raises(FedlabError, match=r"data\.dataset: .*'tinyimagenet' under profile 'ssfl'"):
        augment.test_transform("tinyimagenet", profile="ssfl")


def test_ssfl_augmentation_reads_nothing_back_to_the_host(monkeypatch) -> None:
    watch = HostReadWatch(monkeypatch)
    pipeline = watch.hot(augment.train_transform("cifar100", True, profile="ssfl"))
    images = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    out = pipeline(images, torch.Generator().manual_seed(0))
    assert out.shape == images.shape and watch.reads == []
