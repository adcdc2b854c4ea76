"""The work after nvJPEG (turn upright, crop, fingerprint, thumbnail) runs pictures of one size and
orientation together; these tests hold it to the one-picture-at-a-time result on the CPU, where
the same torch operations run (the GPU tests compare the whole path with Pillow's)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from image_search.indexing.gpudecode import crop, finish, reductions, shrink, to_host, upright
from image_search.pictures import fingerprint
from image_search.pictures.imaging import CropSpec


def pictures() -> list[torch.Tensor | None]:
    """Two sizes, one picture nvJPEG refused (None), made from smooth gradients plus noise."""
    rng = np.random.default_rng(7)

    def one(h: int, w: int) -> torch.Tensor:
        across = np.linspace(0, 200, w, dtype=np.float32)[None, :]
        ramp = across + np.linspace(0, 50, h, dtype=np.float32)[:, None]
        noise = rng.integers(0, 40, (3, h, w))
        return torch.from_numpy((ramp[None] + noise).clip(0, 255).astype(np.uint8))

    return [one(600, 800), one(600, 800), None, one(900, 500), one(600, 800), one(600, 800)]


@pytest.mark.parametrize("spec", [CropSpec(), CropSpec(224, 224, 224, square=True)], ids=["clip", "siglip"])
def test_grouped_equals_one_at_a_time(spec: CropSpec) -> None:
    images = pictures()
    orientations = [1, 6, 1, 1, 1, 3]  # the 800x600s split into three groups by orientation
    grouped = finish(images, orientations, spec)
    assert grouped[2] is None
    for img, o, got in zip(images, orientations, grouped, strict=True):
        if img is None:
            continue
        assert got is not None
        up = upright(img, o)
        want = (crop(up, spec), reductions(up), shrink(up))
        assert got[0].shape == (spec.crop_height, spec.crop_width, 3)
        for a, b in zip(got, want, strict=True):
            assert a.shape == b.shape and torch.equal(a, b)


def test_to_host_keeps_each_picture_its_own() -> None:
    images = pictures()
    orientations = [1, 1, 1, 1, 6, 1]
    host = to_host(finish(images, orientations, CropSpec()))
    assert host[2] is None
    sizes = {(h.shape[0], h.shape[1]) for h in (x[2] for x in host if x is not None)}
    assert sizes == {(192, 256), (256, 142), (256, 192)}  # fitted within 256, upright, not padded
    for img, o, got in zip(images, orientations, host, strict=True):
        if img is None:
            continue
        assert got is not None
        up = upright(img, o)
        values = reductions(up).numpy()
        cut = fingerprint.GREY * fingerprint.GREY
        assert got[1] == fingerprint.from_reduced(values[:cut], values[cut:])
        assert np.array_equal(got[2], shrink(up).permute(1, 2, 0).numpy())


def test_to_host_one_shape_without_padding() -> None:
    images = pictures()[:2]
    host = to_host(finish(images, [1, 1], CropSpec()))
    for img, got in zip(images, host, strict=True):
        assert got is not None and img is not None
        assert np.array_equal(got[2], shrink(img).permute(1, 2, 0).numpy())
