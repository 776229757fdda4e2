"""POST /v1/sync: one round trip, consent filter, cursors, summary counts, paging; devices."""

from __future__ import annotations

from typing import Any

from tests.conftest import Api
from tests.test_conversations import (
    H,
    add_book_entry,
    block,
    dm,
    error,
    group,
    person,
    send,
)


async def sync(api: Api, headers: H, **body: Any) -> dict[str, Any]:
    r = await api.client.post("/v1/sync", json=body, headers=headers)
    assert r.status_code == 200, r.text
    return dict(r.json())


def cursors_of(result: dict[str, Any], into: dict[str, int] | None = None) -> dict[str, int]:
    out = dict(into or {})
    for c in result["conversations"]:
        out[str(c["id"])] = c["cursor"]
    return out


async def test_an_offline_device_catches_up_with_one_sync(api: Api) -> None:
    a, ha = await person(api, 1)
    b, hb = await person(api, 2)
    c, hc = await person(api, 3)
    await add_book_entry(api, b, "+14155550001")
    await add_book_entry(api, b, "+14155550003")
    laptop = await api.token(b, "laptop")
    d1 = await dm(api, ha, b)
    g = await group(api, hc, [a, b], name="team")
    await send(api, ha, d1["id"], "one", "a1")
    await send(api, hc, g["id"], "two", "c1")

    # The laptop starts from nothing: everything is new.
    first = await sync(api, laptop)
    assert (first["eligible"], first["synced"]) == (2, 2)
    by_id = {c["id"]: c for c in first["conversations"]}
    assert [m["body"] for m in by_id[d1["id"]]["messages"]] == ["one"]
    assert by_id[g["id"]]["name"] == "team" and by_id[g["id"]]["kind"] == "group"
    assert sorted(m["user_id"] for m in by_id[g["id"]]["members"]) == sorted([a, b, c])
    assert first["next_cursor"] is None and first["excluded"] == []
    cursors = cursors_of(first)

    # While the laptop is offline, the phone and the others carry on.
    await send(api, hb, d1["id"], "three", "b1")
    await send(api, ha, d1["id"], "four", "a2")
    await api.client.patch(f"/v1/conversations/{g['id']}", json={"name": "team 2"}, headers=hc)
    d2 = await dm(api, hc, b)
    await send(api, hc, d2["id"], "five", "c2")

    second = await sync(api, laptop, cursors=cursors)
    assert (second["eligible"], second["synced"]) == (3, 3)
    by_id = {c["id"]: c for c in second["conversations"]}
    assert [m["body"] for m in by_id[d1["id"]]["messages"]] == ["three", "four"]
    assert by_id[d1["id"]]["messages"][0]["sender_id"] == b
    change = by_id[g["id"]]["messages"]
    assert [m["kind"] for m in change] == ["system"] and change[0]["data"]["name"] == "team 2"
    assert by_id[g["id"]]["name"] == "team 2"
    assert [m["body"] for m in by_id[d2["id"]]["messages"]] == ["five"]

    # Nothing new: eligible stays, synced is zero, no conversations come back.
    third = await sync(api, laptop, cursors=cursors_of(second, cursors))
    assert (third["eligible"], third["synced"], third["conversations"]) == (3, 0, [])
    # The phone, which sent some of these, sees the same state.
    phone = await sync(api, hb)
    assert {c["id"]: c["last_seq"] for c in phone["conversations"]} == {
        c["id"]: c["last_seq"] for c in second["conversations"]
    }


async def test_consent_filter_excludes_denied_and_unknown_unless_asked(api: Api) -> None:
    a, ha = await person(api, 1)
    ids = {}
    for n, state in ((2, "allowed"), (3, "unknown"), (4, "denied")):
        other, ho = await person(api, n)
        d = await dm(api, ho, a)
        await send(api, ho, d["id"], f"from {state}", f"m{n}")
        if state != "unknown":
            await api.client.put(
                f"/v1/conversations/{d['id']}/consent", json={"state": state}, headers=ha
            )
        ids[state] = d["id"]

    default = await sync(api, ha)
    assert [c["id"] for c in default["conversations"]] == [ids["allowed"]]
    assert (default["eligible"], default["synced"]) == (1, 1)
    both = await sync(api, ha, consent=["allowed", "unknown"])
    assert {c["id"] for c in both["conversations"]} == {ids["allowed"], ids["unknown"]}
    denied = await sync(api, ha, consent=["denied"])
    assert [c["id"] for c in denied["conversations"]] == [ids["denied"]]
    assert denied["conversations"][0]["consent"] == "denied"
    assert [m["body"] for m in denied["conversations"][0]["messages"]] == ["from denied"]
    everything = await sync(api, ha, consent=["allowed", "unknown", "denied"])
    assert (everything["eligible"], everything["synced"]) == (3, 3)

    # A device that knew a conversation learns when it left the filter, and why.
    cursors = cursors_of(everything)
    cursors["999999"] = 0
    allowed_only = await sync(api, ha, cursors=cursors)
    assert allowed_only["excluded"] == [
        {"id": ids["unknown"], "member": True, "consent": "unknown"},
        {"id": ids["denied"], "member": True, "consent": "denied"},
        {"id": 999999, "member": False, "consent": None},
    ]


async def test_summary_counts_and_paging_of_conversations_and_messages(api: Api) -> None:
    a, ha = await person(api, 1)
    convs = []
    for n in range(2, 9):
        other, ho = await person(api, n)
        await add_book_entry(api, other, "+14155550001")
        convs.append((await dm(api, ha, other))["id"])
    for i in range(5):
        await send(api, ha, convs[0], f"m{i}", f"c{i}")
    await send(api, ha, convs[3], "x", "x1")
    start = await sync(api, ha)
    assert (start["eligible"], start["synced"]) == (7, 7)
    cursors = cursors_of(start)
    for i in range(5, 10):
        await send(api, ha, convs[0], f"m{i}", f"c{i}")
    await send(api, ha, convs[2], "y", "y1")
    await send(api, ha, convs[5], "z", "z1")

    # Pages of one conversation and two messages each, following both cursors; when the
    # pages run out, start again from the updated cursors until nothing is new.
    got: dict[int, list[str]] = {}
    page_cursor = None
    first = await sync(api, ha, cursors=cursors, limit=1, message_limit=2)
    assert (first["eligible"], first["synced"]) == (7, 3)
    assert [c["id"] for c in first["conversations"]] == [convs[0]]
    assert first["conversations"][0]["has_more"] is True and first["next_cursor"]
    for _ in range(20):
        body: dict[str, Any] = {"cursors": cursors, "limit": 1, "message_limit": 2}
        if page_cursor:
            body["cursor"] = page_cursor
        result = await sync(api, ha, **body)
        assert result["eligible"] == 7
        if page_cursor is None and result["synced"] == 0:
            break
        for c in result["conversations"]:
            got.setdefault(c["id"], []).extend(m["body"] for m in c["messages"])
            cursors[str(c["id"])] = c["cursor"]
        page_cursor = result["next_cursor"]
    else:
        raise AssertionError("sync did not converge")
    assert got == {
        convs[0]: [f"m{i}" for i in range(5, 10)],
        convs[2]: ["y"],
        convs[5]: ["z"],
    }


async def test_blocked_senders_messages_stay_hidden_in_sync(api: Api) -> None:
    a, ha = await person(api, 1)
    b, hb = await person(api, 2)
    c, hc = await person(api, 3)
    await add_book_entry(api, c, "+14155550001")
    g = await group(api, ha, [b, c])
    await block(api, c, b)
    await send(api, hb, g["id"], "from b", "b1")
    await send(api, ha, g["id"], "from a", "a1")
    result = await sync(api, hc)
    conv = result["conversations"][0]
    assert [m["body"] for m in conv["messages"]] == ["from a"] and conv["cursor"] == 2


async def test_bad_sync_requests_are_refused(api: Api) -> None:
    _, ha = await person(api, 1)
    cases = [
        ({"consent": ["maybe"]}, "invalid_request"),
        ({"consent": []}, "invalid_request"),
        ({"cursors": {"abc": 1}}, "invalid_request"),
        ({"cursors": {"0": 1}}, "invalid_request"),
        ({"cursors": {"-1": 1}}, "invalid_request"),
        ({"cursors": {str(2**63): 1}}, "invalid_request"),
        ({"cursors": {"1": -1}}, "invalid_request"),
        ({"cursors": {"1": "x"}}, "invalid_request"),
        ({"cursors": [1, 2]}, "invalid_request"),
        ({"cursor": "@@@"}, "invalid_cursor"),
        ({"limit": 0}, "invalid_request"),
        ({"message_limit": 100000}, "invalid_request"),
        ({"since": 1}, "invalid_request"),
    ]
    for body, code in cases:
        r = await api.client.post("/v1/sync", json=body, headers=ha)
        assert (r.status_code, error(r)) == (422, code), body
    assert (await api.client.post("/v1/sync", json={})).status_code == 401


async def test_sync_request_goes_to_the_users_devices_naming_the_requester(api: Api) -> None:
    a, phone = await person(api, 1)
    laptop = await api.token(a, "laptop")
    b, hb = await person(api, 2)
    r = await api.client.post("/v1/devices/sync-request", headers=laptop)
    assert r.status_code == 202 and r.json()["device_id"] == "laptop"
    r = await api.client.post(
        "/v1/devices/sync-request", json={"reason": "restored"}, headers=phone
    )
    assert r.status_code == 202
    log = await api.events(phone)
    assert [(e["type"], e["data"]["device_id"]) for e in log] == [
        ("sync.requested", "laptop"),
        ("sync.requested", "phone-1"),
    ]
    assert log[1]["data"]["reason"] == "restored" and r.json()["seq"] == log[1]["seq"]
    assert (log[0]["data"]["devices"], log[1]["data"]["devices"]) == (["phone-1"], ["laptop"])
    assert await api.events(hb) == []
    bad = await api.client.post("/v1/devices/sync-request", json={"x": 1}, headers=phone)
    assert (bad.status_code, error(bad)) == (422, "invalid_request")
    devices = (await api.client.get("/v1/devices", headers=phone)).json()["devices"]
    assert [d["device_id"] for d in devices] == ["phone-1", "laptop"]


async def test_the_openapi_schema_documents_these_endpoints(api: Api) -> None:
    schema = (await api.client.get("/openapi.json")).json()
    paths = schema["paths"]
    for path, method in (
        ("/v1/conversations", "post"),
        ("/v1/conversations", "get"),
        ("/v1/conversations/{conversation_id}/messages", "post"),
        ("/v1/conversations/{conversation_id}/messages", "get"),
        ("/v1/conversations/{conversation_id}/consent", "put"),
        ("/v1/conversations/{conversation_id}/members", "post"),
        ("/v1/sync", "post"),
        ("/v1/devices/sync-request", "post"),
        ("/v1/me/preferences", "put"),
    ):
        assert method in paths[path], (path, method)
    sync_out = schema["components"]["schemas"]["SyncOut"]["properties"]
    assert {"eligible", "synced", "conversations", "next_cursor"} <= set(sync_out)
