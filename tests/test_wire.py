"""Requests to the embedded engine encoded in C (image_search/store/wire.py): the SDK's bytes."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from surrealdb import Duration, RecordID
from surrealdb.request_message.message import RequestMessage
from surrealdb.request_message.methods import RequestMethod

from image_search.store import Store, image_key, path_fields, record_id, wire

from .test_store import row, unit

SQL = "INSERT INTO image $rows RETURN NONE"


def sdk(sql: str, params: dict, request_id: str) -> bytes:
    message = RequestMessage(RequestMethod.QUERY, query=sql, params=params)
    message.id = request_id
    return message.WS_CBOR_DESCRIPTOR


def same(params: dict) -> None:
    assert wire.encode(SQL, params, "id-1") == sdk(SQL, params, "id-1")


def test_image_rows_are_the_sdks_bytes() -> None:
    """What the store writes: rows with NONE fields, bytes, datetimes, record ids, names that
    are not UTF-8 (kept as bytes), the lane and the counts."""
    odd = "/pics/caf\udce9.jpg"
    rows = [row(f"/pics/{i}.jpg", unit(i)) for i in range(3)] + [row("/pics/x.jpg", error="bad")]
    rows.append({**row("/pics/y.jpg", unit(9), hash="h"), **path_fields(odd), "key": image_key(odd)})
    content = [{**{k: v for k, v in r.items() if k != "key"}, "id": record_id(r["key"])} for r in rows]
    same({"rows": content, "after": [5, 4, 1, 0], "lane": RecordID("lane", 1)})
    same({"ids": [record_id("k1"), RecordID("image", 7)], "o": True, "m": "model", "n": -(2**63)})
    same({"t": dt.datetime(2020, 5, 1, 12, 30, 1, 123456, tzinfo=dt.UTC), "s": 2**63 - 1})
    same({"f": {"nested": [{"a": None}, [], {}], "x": [0.5, -0.0, 1e300, 3.0]}, "e": "", "u": "日本語 🌅"})


values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary(max_size=64)
    | st.datetimes(timezones=st.just(dt.UTC))
    | st.builds(RecordID, st.sampled_from(["image", "lane"]), st.text(min_size=1, max_size=8)),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(max_size=8), values, max_size=6))
def test_any_params_of_these_kinds_are_the_sdks_bytes(params: dict) -> None:
    same(params)


@pytest.mark.parametrize(
    "value",
    [2**63, -(2**63) - 1, {1, 2}, Duration.parse("1h"), dt.datetime(2020, 1, 1), {1: "a"}, object()],
    ids=["int-high", "int-low", "set", "duration", "naive-datetime", "int-key", "object"],
)
def test_what_only_the_sdk_encodes_is_left_to_it(value: object) -> None:
    assert wire.encode(SQL, {"v": [{"deep": value}]}, "id-1") is None


async def test_the_store_sends_through_it_and_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[bool] = []
    encode = wire.encode

    def counting(sql: str, params: dict, request_id: str) -> bytes | None:
        request = encode(sql, params, request_id)
        sent.append(request is not None)
        return request

    monkeypatch.setattr(wire, "encode", counting)
    async with Store("mem://") as store:
        assert wire.engine(store.db) is not None
        sent.clear()
        await store.write([row("/pics/a.jpg", unit(1))])
        got = await store.get_one(image_key("/pics/a.jpg"), embedding=True)
        assert got is not None and got["hash"] == "h-/pics/a.jpg" and got["error"] is None
        assert sent and all(sent)  # every statement encoded in C
        sent.clear()
        assert await store.first("RETURN $d", {"d": Duration.parse("90m")}) == Duration.parse("90m")
        assert sent == [False]  # the SDK's own type: the SDK encoded it
