"""A model's identity by what its weights hold, not where they lie.

The same checkpoint in another folder, under another folder name, or as the Hugging Face cache's
copy of a hub id must count as the same model: its vectors are the same, and re-embedding a
100k-photo library because a folder moved would waste hours. :func:`content_digest` hashes the
values of the checkpoint's projection tensors (the layers that produce the vectors a search
compares) with their names, dtypes and shapes, read straight from the safetensors files: a few
MB, whatever the sharding, the file names or the folder. A fine-tune changes those bytes; a copy
does not. Checkpoints only in pickle format (``.bin``) fall back to their file sizes and heads.
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

MAX_HEADER = 100 << 20  # a safetensors header larger than this is not one
MAX_TENSOR_BYTES = 32 << 20  # read at most this much of each chosen tensor
FALLBACK_TENSORS = 4


def _tensors(path: Path) -> dict[str, tuple[Path, int, dict[str, object]]]:
    """name → (file, data start, header entry) for one safetensors file."""
    with path.open("rb") as fh:
        (size,) = struct.unpack("<Q", fh.read(8))
        if not 0 < size <= MAX_HEADER:
            raise ValueError(f"{path.name}: not a safetensors file")
        header = json.loads(fh.read(size))
    header.pop("__metadata__", None)
    return {name: (path, 8 + size, entry) for name, entry in header.items()}


def _chosen(names: list[str]) -> list[str]:
    projections = [n for n in names if n.endswith("projection.weight")]
    return projections or names[:FALLBACK_TENSORS]


def content_digest(directory: Path) -> str | None:
    """``sha256:…`` of the checkpoint in ``directory``; None where it holds no weights."""
    files = sorted(directory.glob("*.safetensors"))
    digest = hashlib.sha256()
    if files:
        tensors: dict[str, tuple[Path, int, dict[str, object]]] = {}
        for path in files:
            tensors.update(_tensors(path))
        for name in _chosen(sorted(tensors)):
            path, base, entry = tensors[name]
            start, end = (int(x) for x in entry["data_offsets"])  # type: ignore[attr-defined]
            digest.update(json.dumps([name, entry["dtype"], entry["shape"]]).encode())
            with path.open("rb") as fh:
                fh.seek(base + start)
                digest.update(fh.read(min(end - start, MAX_TENSOR_BYTES)))
        return "sha256:" + digest.hexdigest()[:32]
    pickles = sorted(directory.glob("*.bin"))
    if not pickles:
        return None
    for path in pickles:
        digest.update(str(path.stat().st_size).encode())
        with path.open("rb") as fh:
            digest.update(fh.read(1 << 20))
    return "files:" + digest.hexdigest()[:32]


def hub_snapshot(repo_id: str) -> Path | None:
    """The Hugging Face cache's folder for ``repo_id``, where it has been downloaded."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - transformers depends on it
        return None
    try:
        found = try_to_load_from_cache(repo_id, "config.json")
    except Exception:  # a name that is not a repository id
        return None
    return Path(found).parent if isinstance(found, str) else None


def folder_fingerprint(directory: Path) -> str:
    """Part of a local checkpoint's *name* (``local:FOLDER:FINGERPRINT``) since the first version:
    its config and the size and head of its weight files. Identity is :func:`content_digest`."""
    digest = hashlib.blake2b(digest_size=8)
    for path in sorted(directory.iterdir()):
        if path.name == "config.json" or path.suffix in {".safetensors", ".bin"}:
            digest.update(path.name.encode())
            digest.update(str(path.stat().st_size).encode())
            with path.open("rb") as fh:
                digest.update(fh.read(1 << 16))
    return digest.hexdigest()


def scalars(directory: Path, names: tuple[str, ...]) -> dict[str, float]:
    """Single-value tensors of a safetensors checkpoint (SigLIP's ``logit_scale`` and
    ``logit_bias``), read without loading it; those it lacks are left out."""
    import numpy as np

    kinds = {"F32": np.float32, "F16": np.float16, "F64": np.float64}
    found: dict[str, float] = {}
    for path in sorted(directory.glob("*.safetensors")):
        tensors = _tensors(path)
        for name in names:
            if name not in tensors or name in found:
                continue
            _, base, entry = tensors[name]
            start, end = (int(x) for x in entry["data_offsets"])  # type: ignore[attr-defined]
            dtype = str(entry["dtype"])
            if end - start > 8 or dtype not in (*kinds, "BF16"):
                continue
            with path.open("rb") as fh:
                fh.seek(base + start)
                data = fh.read(end - start)
            if dtype == "BF16":  # the high half of a float32
                found[name] = float(np.frombuffer(b"\0\0" + data[:2], dtype="<f4")[0])
            else:
                found[name] = float(np.frombuffer(data, dtype=kinds[dtype])[0])
    return found
