"""JPEG decoding on a CUDA GPU (nvJPEG through torchvision), for hosts whose CPUs cannot keep up.

Decoded on the GPU, turned upright by the EXIF orientation, resized (shortest side, bicubic with
antialiasing) and centre-cropped there. torch's antialiased bicubic is not Pillow's filter to the
bit: embeddings agree with the CPU path to cosine ≥ 0.99 (tested on the GPU), the tolerance the
README states. Files nvJPEG refuses (progressive or CMYK JPEGs, say) go back to the CPU path.
"""

from __future__ import annotations

import functools
import io
import logging
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..pictures import fingerprint
from ..pictures.imaging import CropSpec
from .feeding import Stages

log = logging.getLogger(__name__)


def available(device: torch.device) -> bool:
    if device.type != "cuda":
        return False
    try:
        from torchvision.io import decode_jpeg  # noqa: F401
    except Exception:
        return False
    return True


def upright(image: torch.Tensor, orientation: int) -> torch.Tensor:
    """Apply an EXIF orientation (1-8) to a (3, H, W) or (N, 3, H, W) tensor, as
    PIL.ImageOps.exif_transpose does."""
    if orientation == 2:
        return image.flip(-1)
    if orientation == 3:
        return image.flip(-2).flip(-1)
    if orientation == 4:
        return image.flip(-2)
    if orientation == 5:
        return image.transpose(-2, -1)
    if orientation == 6:
        return image.transpose(-2, -1).flip(-1)
    if orientation == 7:
        return image.transpose(-2, -1).flip(-2).flip(-1)
    if orientation == 8:
        return image.transpose(-2, -1).flip(-2)
    return image


def crop(image: torch.Tensor, spec: CropSpec) -> torch.Tensor:
    """(3, H, W) uint8 → (H', W', 3) uint8 crop, the same geometry as imaging.model_input."""
    return crops(image[None], spec)[0]


def crops(images: torch.Tensor, spec: CropSpec) -> torch.Tensor:
    """:func:`crop` for (N, 3, H, W) pictures of one size at once → (N, H', W', 3)."""
    height, width = images.shape[-2:]
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = spec.shortest_edge, int(spec.shortest_edge * long / short)
    new_w, new_h = (new_short, new_long) if width <= height else (new_long, new_short)
    if spec.square:  # SigLIP: the whole picture to the square input, no crop
        new_w, new_h = spec.crop_width, spec.crop_height
    pixels = images.float()
    # Like Pillow's draft mode: an integer box reduction first (1/2, 1/4 or 1/8), never below
    # twice the target, so the antialiased bicubic runs on a small image, not on 12 MP.
    factor = 1
    while factor < 8 and short // (factor * 2) >= 2 * spec.shortest_edge:
        factor *= 2
    if factor > 1:
        pixels = torch.nn.functional.avg_pool2d(pixels, factor, ceil_mode=True)
    resized = torch.nn.functional.interpolate(
        pixels,
        size=(new_h, new_w),
        mode="bilinear" if spec.resample == 2 else "bicubic",  # Pillow's BILINEAR is 2
        antialias=True,
        align_corners=False,
    )
    resized = resized.clamp_(0, 255).round_().to(torch.uint8)
    top, left = max(0, (new_h - spec.crop_height) // 2), max(0, (new_w - spec.crop_width) // 2)
    out = resized[:, :, top : top + spec.crop_height, left : left + spec.crop_width]
    if out.shape[2:] != (spec.crop_height, spec.crop_width):  # thinner than the crop: pad
        padded = torch.zeros(
            (len(out), 3, spec.crop_height, spec.crop_width), dtype=torch.uint8, device=images.device
        )
        padded[:, :, : out.shape[2], : out.shape[3]] = out
        out = padded
    return out.permute(0, 2, 3, 1)


def reductions(image: torch.Tensor) -> torch.Tensor:
    """What a fingerprint is made of, from an upright (3, H, W) uint8 picture: 32x32 grey (Pillow's
    "L" weights) and 4x4 colour box means, flattened into one (1024 + 48,) float tensor.

    Box means all the way down, in steps that keep every GPU thread's window small: a 12 MP
    picture pooled straight to 4x4 sums 750,000 pixels per thread (34 s for 1,000 photos on an
    H200, 3.2 s for the rest of their decoding); first an integer reduction to ~128 px, then
    32x32, whose 8x8 blocks are the 4x4 grid. Grey is a weighted sum, so it commutes with means."""
    return batch_reductions(image[None])[0]


def batch_reductions(images: torch.Tensor) -> torch.Tensor:
    """:func:`reductions` for (N, 3, H, W) pictures of one size at once → (N, 1072)."""
    pixels = images.float()
    factor = max(1, min(pixels.shape[-2:]) // (4 * fingerprint.GREY))
    if factor > 1:
        pixels = torch.nn.functional.avg_pool2d(pixels, factor, ceil_mode=True)
    colour = torch.nn.functional.adaptive_avg_pool2d(pixels, fingerprint.GREY)  # (N, 3, 32, 32)
    grey = (colour * _grey_weights(images.device)).sum(1)
    step = fingerprint.GREY // fingerprint.GRID
    grid = torch.nn.functional.avg_pool2d(colour, step).permute(0, 2, 3, 1)
    return torch.cat([grey.reshape(len(images), -1), grid.reshape(len(images), -1)], dim=1)


@functools.cache
def _grey_weights(device: torch.device) -> torch.Tensor:
    """Made once per device: a tensor built from a list is a host-to-device copy, which waits for
    everything queued on the device (the model's forward pass included), once per photo."""
    return torch.tensor([0.299, 0.587, 0.114], device=device).view(3, 1, 1)


THUMB = 256  # the grid's thumbnail size (image_search.pictures.thumbs.DEFAULT_SIZE)


def shrink(image: torch.Tensor, size: int = THUMB) -> torch.Tensor:
    """An upright (3, H, W) uint8 picture (or (N, 3, H, W) of one size) fitted within ``size``
    (antialiased), for the grid's thumbnail: never enlarged."""
    height, width = image.shape[-2:]
    scale = size / max(height, width)
    if scale >= 1:
        return image
    shape = (max(1, round(height * scale)), max(1, round(width * scale)))
    pixels = image.float() if image.dim() == 4 else image[None].float()
    small = torch.nn.functional.interpolate(
        pixels, size=shape, mode="bilinear", antialias=True, align_corners=False
    )
    small = small.clamp_(0, 255).round_().to(torch.uint8)
    return small if image.dim() == 4 else small[0]


def decode_batch(
    data: Sequence[bytes | bytearray], orientations: Sequence[int], spec: CropSpec, device: torch.device
) -> list[tuple[torch.Tensor, bytes, np.ndarray] | None]:
    """For each JPEG its crop (H, W, 3) uint8 on ``device``, its fingerprint and its thumbnail
    ((h, w, 3) uint8 on the CPU, within 256 px), or None where nvJPEG refused it. Decoded in
    chunks of 32: larger batched calls measured slower (448/s at 32, 296/s at 128).

    Runs on a CUDA stream of the calling thread's own, not the device's default stream: there the
    model's forward pass is queued, and every copy back to the host (the fingerprints, the
    thumbnails) and nvJPEG's own wait would sit behind it."""
    with torch.cuda.stream(_own_stream(device)):
        return _decode_batch(data, orientations, spec, device)


_streams = threading.local()


def _own_stream(device: torch.device) -> torch.cuda.Stream:
    """This thread's decoding stream on ``device``, made once."""
    mine: dict[torch.device, torch.cuda.Stream] = _streams.__dict__.setdefault("by_device", {})
    if device not in mine:
        mine[device] = torch.cuda.Stream(device)
    return mine[device]


def _decode_batch(
    data: Sequence[bytes | bytearray], orientations: Sequence[int], spec: CropSpec, device: torch.device
) -> list[tuple[torch.Tensor, bytes, np.ndarray] | None]:
    out: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None] = []
    for start in range(0, len(data), CHUNK):
        out += _decode_chunk(data[start : start + CHUNK], orientations[start : start + CHUNK], spec, device)
    return to_host(out)


def to_host(
    out: Sequence[tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None],
) -> list[tuple[torch.Tensor, bytes, np.ndarray] | None]:
    """:func:`finish`'s output → each crop where it is, fingerprints and thumbnails on the host."""
    done = [triple for triple in out if triple is not None]
    if not done:
        return [None] * len(out)
    reduced = iter(torch.stack([r for _, r, _ in done]).cpu().numpy())  # one transfer for the batch
    # The thumbnails as one tensor, one transfer too (padded to one shape unless they share
    # one: a camera's), then cut back to their sizes.
    if len({t.shape for _, _, t in done}) == 1:
        padded = torch.stack([t for _, _, t in done])
    else:
        padded = torch.zeros((len(done), 3, THUMB, THUMB), dtype=torch.uint8, device=done[0][2].device)
        for i, (_, _, small) in enumerate(done):
            padded[i, :, : small.shape[1], : small.shape[2]] = small
    smalls = iter(
        zip(padded.permute(0, 2, 3, 1).cpu().numpy(), [t.shape[1:] for _, _, t in done], strict=True)
    )
    cut = fingerprint.GREY * fingerprint.GREY
    result: list[tuple[torch.Tensor, bytes, np.ndarray] | None] = []
    for triple in out:
        if triple is None:
            result.append(None)
        else:
            values = next(reduced)
            frame, (h, w) = next(smalls)
            thumb = np.ascontiguousarray(frame[:h, :w])
            result.append((triple[0], fingerprint.from_reduced(values[:cut], values[cut:]), thumb))
    return result


CHUNK = 32


def warm_nvjpeg(embedder: Any) -> None:
    """Create torchvision's nvJPEG decoder on the model's device and decode a first batch, so the
    first real batch does not pay for either."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (90, 120, 150)).save(buffer, "JPEG")
    decode_batch([buffer.getvalue()] * 2, [1, 1], embedder.crop, embedder.device)


def _decode_chunk(
    data: Sequence[bytes | bytearray], orientations: Sequence[int], spec: CropSpec, device: torch.device
) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None]:
    from torchvision.io import ImageReadMode, decode_jpeg

    # A bytearray (read_file's) is used as it is; bytes are copied, torch wants a writable buffer.
    tensors = [
        torch.frombuffer(blob if isinstance(blob, bytearray) else bytearray(blob), dtype=torch.uint8)
        for blob in data
    ]
    try:
        images: list[torch.Tensor | None] = list(
            decode_jpeg(tensors, mode=ImageReadMode.RGB, device=device)  # type: ignore[arg-type]
        )
    except RuntimeError:  # one bad file fails the batch call: decode one at a time
        images = []
        for tensor in tensors:
            try:
                images.append(decode_jpeg(tensor, mode=ImageReadMode.RGB, device=device))
            except RuntimeError as exc:
                log.debug("nvJPEG refused a file: %s", exc)
                images.append(None)
    return finish(images, orientations, spec)


def finish(
    images: Sequence[torch.Tensor | None], orientations: Sequence[int], spec: CropSpec
) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None]:
    """Decoded (3, H, W) pictures (None: refused) → each one's crop, fingerprint reductions and
    thumbnail, on their device. Pictures of one size and orientation (a camera's photos) go through
    each step together: one call per step for the group instead of one per picture. Each call lets
    go of the GIL and must take it back, and beside a busy event loop that wait is what a decoding
    thread's time went to (11 img/s beside a spinning Python thread, one picture at a time)."""
    groups: dict[tuple[int, int, int, int], list[int]] = {}
    for i, (img, o) in enumerate(zip(images, orientations, strict=True)):
        if img is not None:
            groups.setdefault((*img.shape, o), []).append(i)
    out: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None] = [None] * len(images)
    for (*_, o), members in groups.items():
        together = [img for i in members if (img := images[i]) is not None]
        up = upright(torch.stack(together) if len(together) > 1 else together[0][None], o)
        for i, c, r, t in zip(members, crops(up, spec), batch_reductions(up), shrink(up), strict=True):
            out[i] = (c, r, t)
    return out


Decoded = list[tuple[torch.Tensor, bytes, np.ndarray] | None]


def embed_mixed(
    embedder: Any, crops: list[Any], decoded: Decoded, stages: Stages | None = None
) -> tuple[np.ndarray, set[int], list[bytes], list[np.ndarray]]:
    """On the model thread: embed CPU crops and nvJPEG's (:func:`decode_batch`'s output, on any
    device) together. Returns vectors (CPU crops first, then the JPEGs nvJPEG accepted), the
    indices of the JPEGs it refused, and the fingerprints and thumbnails of those it accepted.
    ``stages`` is told the seconds the forward pass took."""
    parts = []
    if crops:
        parts.append(torch.from_numpy(np.stack(crops)).to(embedder.device, non_blocking=True))
    refused = {i for i, triple in enumerate(decoded) if triple is None}
    accepted = [triple for triple in decoded if triple is not None]
    prints = [print_ for _, print_, _ in accepted]
    thumbs = [thumb for _, _, thumb in accepted]
    if accepted:
        crops_on_gpu = [crop for crop, _, _ in accepted]
        for crop_ in crops_on_gpu:  # made on a decoding stream (complete: its host copies waited)
            if crop_.is_cuda:  # its memory is not reused there until this stream is done with it
                crop_.record_stream(torch.cuda.current_stream(crop_.device))
        parts.append(torch.stack(crops_on_gpu).to(embedder.device))
    if not parts:
        return np.zeros((0, embedder.dim), dtype=np.float32), refused, prints, thumbs
    with (stages or Stages()).time(f"model {embedder.device}"):
        vectors = embedder.embed_pixels(torch.cat(parts) if len(parts) > 1 else parts[0])
    return vectors, refused, prints, thumbs
