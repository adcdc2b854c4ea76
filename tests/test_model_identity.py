"""A model is identified by its weights, not by where they lie (#20, item 8): the same checkpoint
in another folder, under another name, re-sharded, or as the Hugging Face cache's copy of a hub
id, searches the database it built without re-embedding; another model is refused with a
``--model`` value a user can type."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from image_search.models.model import ModelSource
from image_search.models.weights import content_digest
from image_search.testing import build_tiny_clip


def cli(*args: str, env: dict[str, str], code: int = 0) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "image_search", *args], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def hub_cache(root: Path, repo: str, files: Path) -> Path:
    """The Hugging Face cache's layout for ``repo``, holding a copy of ``files`` (no network)."""
    folder = root / f"models--{repo.replace('/', '--')}"
    snapshot = folder / "snapshots" / "0123456789abcdef"
    shutil.copytree(files, snapshot)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text("0123456789abcdef")
    return root


def test_the_digest_follows_the_weights(tiny_model_dir: Path, tmp_path: Path) -> None:
    from transformers import CLIPModel

    digest = content_digest(tiny_model_dir)
    assert digest is not None and digest.startswith("sha256:")
    moved = shutil.copytree(tiny_model_dir, tmp_path / "elsewhere" / "renamed")
    assert content_digest(moved) == digest
    # Saved again in small shards (other files, other names): the same tensors.
    model = CLIPModel.from_pretrained(tiny_model_dir)
    model.save_pretrained(tmp_path / "sharded", max_shard_size="100KB")
    assert len(list((tmp_path / "sharded").glob("*.safetensors"))) > 1
    assert content_digest(tmp_path / "sharded") == digest
    # One projection weight changed: another model.
    with torch.no_grad():
        model.visual_projection.weight[0, 0] += 1e-3
    model.save_pretrained(tmp_path / "tuned")
    assert content_digest(tmp_path / "tuned") != digest
    assert content_digest(build_tiny_clip(tmp_path / "other", seed=3)) != digest
    assert content_digest(tmp_path) is None  # no weights here


def test_a_hub_id_and_a_local_copy_are_one_model(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub.constants

    cache = hub_cache(tmp_path / "hub", "acme/tiny-clip", tiny_model_dir)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    hub, local = ModelSource("acme/tiny-clip"), ModelSource(str(tiny_model_dir))
    assert hub.model_id == "acme/tiny-clip" and hub.model_id != local.model_id
    assert hub.content == local.content is not None
    assert ModelSource("acme/not-downloaded").content is None


def test_moving_the_model_folder_does_not_re_embed(
    photo_dir: Path, cli_env: dict[str, str], tiny_model_dir: Path, tmp_path: Path
) -> None:
    env = cli_env
    first = json.loads(cli("index", str(photo_dir), "--json", env=env).stdout)
    assert first["indexed"] > 0
    before = json.loads(cli("search", "a dog", "--json", env=env).stdout)

    moved = shutil.copytree(tiny_model_dir, tmp_path / "models" / "clip-copy")
    again = json.loads(cli("index", str(photo_dir), "--model", str(moved), "--json", env=env).stdout)
    assert again["indexed"] == 0 and again["unchanged"] == first["indexed"], again
    assert json.loads(cli("search", "a dog", "--model", str(moved), "--json", env=env).stdout) == before

    # The hub cache's copy of an id: the same weights again.
    hub = dict(env, HF_HUB_CACHE=str(hub_cache(tmp_path / "hub", "acme/tiny-clip", tiny_model_dir)))
    hub["HF_HUB_OFFLINE"] = "1"
    assert json.loads(cli("search", "a dog", "--model", "acme/tiny-clip", "--json", env=hub).stdout) == before

    # Another model: refused, with values to type that work as typed.
    other = build_tiny_clip(tmp_path / "models" / "other model", seed=7)
    refused = cli("search", "a dog", "--model", str(other), env=env, code=1).stderr
    assert f"use --model {shlex.quote(str(moved))}" in refused, refused
    assert "local:" not in refused
    suggested = shlex.split(refused.split("use --model ", 1)[1].split(",", 1)[0])
    assert json.loads(cli("search", "a dog", "--model", *suggested, "--json", env=env).stdout) == before
    reembed = refused.split("`", 2)[1]  # image-search index --reembed --model '…/other model'
    assert shlex.split(reembed)[-1] == str(other)


def test_a_library_keeps_its_model_when_none_is_configured(
    photo_dir: Path, cli_env: dict[str, str], tiny_model_dir: Path, tmp_path: Path
) -> None:
    """A library made with the CLIP of an earlier default: with no model configured (as after an
    upgrade that changed the default), every command uses the library's model: nothing embedded
    again, nothing mixed; status and doctor say which model and what a switch costs."""
    from image_search.testing import build_tiny_siglip

    first = json.loads(cli("index", str(photo_dir), "--json", env=cli_env).stdout)
    before = json.loads(cli("search", "a dog", "--json", env=cli_env).stdout)
    unset = {k: v for k, v in cli_env.items() if k != "IMAGE_SEARCH_MODEL"}
    unset["HF_HUB_OFFLINE"] = "1"  # the default's weights are not here: nothing may reach for them

    again = json.loads(cli("index", str(photo_dir), "--json", env=unset).stdout)
    assert again["indexed"] == 0 and again["unchanged"] == first["indexed"], again
    assert json.loads(cli("search", "a dog", "--json", env=unset).stdout) == before

    status = json.loads(cli("status", "--json", env=unset).stdout)
    assert status["model"] == ModelSource(str(tiny_model_dir)).model_id and status["configured_model"] is None
    switch = {row["model"]: row for row in status["switch"]}
    assert switch["google/siglip2-base-patch16-224"]["photos"] == first["indexed"]
    assert switch["google/siglip2-base-patch16-224"]["measure"].startswith("image-search benchmark --model")
    text = cli("status", env=unset).stdout
    assert "the library's" in text and "photos to embed again" in text, text

    doctor = {c["name"]: c for c in json.loads(cli("doctor", "--json", env=unset).stdout)}
    assert doctor["model"]["level"] == "ok" and "the library's model" in doctor["model"]["what"]
    assert str(tiny_model_dir) in doctor["model"]["what"]

    # Another model named outright: refused by every command, the library untouched.
    other = build_tiny_siglip(tmp_path / "siglip")
    named = dict(unset, IMAGE_SEARCH_MODEL=str(other))
    refused = cli("index", str(photo_dir), env=named, code=1).stderr
    assert "--reembed" in refused and "cannot be searched together" in refused, refused
    doctor = {c["name"]: c for c in json.loads(cli("doctor", "--json", env=named, code=1).stdout)}
    assert doctor["model"]["level"] == "FAIL" and "not the library's" in doctor["model"]["what"]
    assert json.loads(cli("search", "a dog", "--json", env=unset).stdout) == before


def test_a_new_library_takes_siglip2(cli_env: dict[str, str], photo_dir: Path) -> None:
    """No model configured and an empty library: the default, SigLIP 2 B/16, named in what
    doctor says and in the message when its weights are not downloaded yet."""
    unset = {k: v for k, v in cli_env.items() if k != "IMAGE_SEARCH_MODEL"}
    unset["HF_HUB_OFFLINE"] = "1"
    doctor = {c["name"]: c for c in json.loads(cli("doctor", "--json", env=unset, code=1).stdout)}
    assert "google/siglip2-base-patch16-224" in doctor["model"]["what"]
    assert "default for a new library" in doctor["model"]["what"]
    failed = cli("index", str(photo_dir), env=unset, code=1).stderr
    assert "google/siglip2-base-patch16-224" in failed and "not in the Hugging Face cache" in failed, failed
    status = cli("status", env=unset).stdout
    assert "the first index run uses google/siglip2-base-patch16-224" in status, status


def test_choosing_the_source() -> None:
    from image_search.errors import ModelUnavailable
    from image_search.models.model import CLIP_L14, DEFAULT_MODEL, chosen_source
    from image_search.store import ModelIdentity

    assert DEFAULT_MODEL == "google/siglip2-base-patch16-224"
    assert chosen_source(None, None).spec == DEFAULT_MODEL
    assert chosen_source("acme/other", ModelIdentity(CLIP_L14, None, CLIP_L14)).spec == "acme/other"
    with pytest.raises(ModelUnavailable, match="no model folder at /no/such/dir"):
        chosen_source("/no/such/dir", None)
    assert chosen_source(None, ModelIdentity(CLIP_L14, None, CLIP_L14)).spec == CLIP_L14
    assert chosen_source(None, ModelIdentity(CLIP_L14)).spec == CLIP_L14  # before `typed` was kept
    random = chosen_source(
        None, ModelIdentity("random:clip-vit-large-patch14.json", None, "--random-weights")
    )
    assert random.random_weights and random.spec == CLIP_L14
    with pytest.raises(ModelUnavailable, match="did not record"):
        chosen_source(None, ModelIdentity("local:tiny:abc"))
