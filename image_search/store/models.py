"""The one check that binds a database to the model whose vectors it holds: which model it is
(name, weights' digest, where they came from), and the message for a change of model."""

from __future__ import annotations

import logging
import shlex
from dataclasses import dataclass
from typing import Any

from .connection import Connection, ModelMismatch

log = logging.getLogger("image_search.store")


@dataclass(frozen=True)
class ModelIdentity:
    """A model as the database knows it: ``name`` (carried by every row it embedded),
    ``content`` (its weights' digest, :mod:`image_search.models.weights`; None where unknown) and
    ``typed`` (what to give ``--model`` to use it again: a hub id or a folder)."""

    name: str
    content: str | None = None
    typed: str | None = None


def _identity(model: ModelIdentity | str) -> ModelIdentity:
    return model if isinstance(model, ModelIdentity) else ModelIdentity(model, None, model)


def mismatch(stored: dict[str, Any], wanted: ModelIdentity, count: int | None = None) -> ModelMismatch:
    """The one message for a model change: what the database holds and the commands that fix it."""
    name = stored["name"]
    typed = stored.get("typed") or (None if name.startswith(("local:", "random:")) else name)
    model = typed if typed and typed != "--random-weights" else name
    held = f"{count} embeddings of model {model!r}" if count else f"embeddings of model {model!r}"
    if typed == "--random-weights":
        back = "run with --random-weights (a benchmark's database)"
    elif typed:
        back = f"use --model {shlex.quote(typed)}"
    else:  # written by a version that did not record where the weights were
        back = f"use --model with the folder of that model (it was called {name.split(':')[1]!r})"
    new = wanted.typed or wanted.name
    return ModelMismatch(
        f"the database holds {held}, not {new!r}. Vectors of two models cannot be searched "
        f"together: {back}, or run `image-search index --reembed --model {shlex.quote(new)}` "
        "to embed every photo again with the new model"
    )


class ModelTable(Connection):
    """``meta:model``: the model every stored embedding came from."""

    async def stored_model(self) -> str | None:
        row = await self._model_row()
        return row["name"] if row else None

    async def bound_model(self) -> ModelIdentity | None:
        """The model the library is bound to (None for a new one): what a reader or writer that
        was not told a model uses (:func:`image_search.models.checkpoint.chosen_source`)."""
        row = await self._model_row()
        if row is None:
            return None
        return ModelIdentity(str(row["name"]), row.get("content"), row.get("typed"))

    async def duplicate_calibration(self) -> dict[str, Any] | None:
        """What :mod:`image_search.duplicates.calibration` measured for the bound model, if it has."""
        row = await self._model_row()
        return row.get("duplicates") if row else None

    async def record_duplicate_calibration(self, model_name: str, facts: dict[str, Any]) -> None:
        """Kept on the model's row: binding another model (``--reembed``) drops it."""
        await self.query(
            "UPDATE meta:model SET duplicates = $d WHERE name = $m RETURN NONE", {"d": facts, "m": model_name}
        )

    async def _model_row(self) -> dict[str, Any] | None:
        return await self.first("SELECT * FROM ONLY meta:model")

    def _same(self, stored: dict[str, Any], model: ModelIdentity) -> bool:
        if stored["name"] == model.name:
            return True
        if model.content is not None and stored.get("content") == model.content:
            log.info(
                "%s holds the same weights as %r, which the database was built with: no re-embedding",
                model.typed or model.name,
                stored["name"],
            )
            return True
        return False

    async def require_model(self, model: ModelIdentity | str) -> str:
        """For readers (search, the web server, the library commands): the database must hold
        this model's vectors, or none yet. Returns the name its rows carry, which differs from
        ``model.name`` for the same weights found elsewhere. Raises :class:`ModelMismatch`."""
        model = _identity(model)
        stored = await self._model_row()
        if stored is None:
            return model.name
        if not self._same(stored, model):
            raise mismatch(stored, model)
        return str(stored["name"])

    async def check_model(self, model: ModelIdentity | str, *, reembed: bool = False) -> str:
        """For writers: bind the database to this model; refuse another model's vectors unless
        re-embedding. With ``reembed`` every embedding of another model is dropped (the files stay
        listed and are embedded again by the next index run). Returns the name to write rows
        with (see :meth:`require_model`); records the weights' content and location."""
        model = _identity(model)
        stored = await self._model_row()
        if stored is not None and self._same(stored, model):
            facts = {"content": model.content or stored.get("content"), "typed": model.typed}
            if any(stored.get(k) != v for k, v in facts.items()):
                await self.query("UPDATE meta:model MERGE $f RETURN NONE", {"f": facts})
            return str(stored["name"])
        others = await self.first(
            "SELECT count() AS n FROM image WHERE model != NONE AND model != $m GROUP ALL", {"m": model.name}
        )
        if others and others[0]["n"] and not reembed:
            raise mismatch(stored or {"name": "?"}, model, others[0]["n"])
        await self.transact(
            "BEGIN TRANSACTION;"
            "LET $gone = (SELECT count() FROM image WHERE model != NONE AND model != $m "
            "AND embedding != NONE AND offline = false GROUP ALL)[0].count ?? 0;"
            "UPDATE image SET embedding = NONE, model = NONE, hash = NONE, mtime_ns = -1 "
            "WHERE model != NONE AND model != $m RETURN NONE;"
            "UPSERT meta:model CONTENT $row; UPSERT $lane SET seq += 1, indexed -= $gone RETURN NONE;"
            "COMMIT TRANSACTION;",
            {"m": model.name, "row": {"name": model.name, "content": model.content, "typed": model.typed}},
        )
        return model.name
