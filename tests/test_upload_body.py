"""The address-book upload's body: its fast decoder gives exactly what the wire model gives
(the same contacts, the same refusals and error answers), whatever the body."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.exceptions import RequestValidationError
from hypothesis import given, settings
from hypothesis import strategies as st

from contactsync.protocol import AddressBookUpload
from contactsync.server.http.addressbook import parse_upload
from contactsync.server.http.deps import parse_body


def _outcome(parse: Any, raw: bytes) -> Any:
    try:
        body = parse(raw)
    except RequestValidationError as exc:
        return ("refused", exc.errors())
    return (
        "taken",
        [(c.phone, c.name, c.destroy) for c in body.contacts],
        (body.region, body.device_id, body.force, body.batch_id, body.final),
    )


def _model(raw: bytes) -> Any:
    return parse_body(AddressBookUpload, raw)


BODIES = [
    b"",
    b"null",
    b"[]",
    b'{"contacts": []}',
    b'{"contacts": [{"phone": "+14155550101", "name": "Ann"}]}',
    b'{"contacts": [{"phone": "+14155550101", "name": " Ann "}]}',
    b'{"contacts": [{"phone": "+14155550101", "name": "\\u00a0Ann"}]}',
    b'{"contacts": [{"phone": "+14155550101", "name": "Ann\\u2028"}]}',
    b'{"contacts": [{"phone": "+14155550101", "name": "A\\u0000nn"}]}',
    b'{"contacts": [{"phone": "+1415\\u00005550101"}]}',
    b'{"contacts": [{"phone": "+14155550101", "name": "\\\\u0000"}]}',
    b'{"contacts": [{"phone": "\\ud800"}]}',
    b'{"contacts": [{"phone": "+14155550101", "name": "' + b"x" * 201 + b'"}]}',
    b'{"contacts": [{"phone": "+14155550101", "name": "' + b"x" * 200 + b'"}]}',
    b'{"contacts": [{"phone": "' + b"1" * 65 + b'"}]}',
    b'{"contacts": [{"phone": "' + "\u00e9".encode() * 64 + b'"}]}',
    b'{"contacts": [{"phone": 14155550101}]}',
    b'{"contacts": [{"phone": "+14155550101", "destroy": 1}]}',
    b'{"contacts": [{"phone": "+14155550101", "destroy": null}]}',
    b'{"contacts": [{"phone": "+14155550101", "extra": 1}]}',
    b'{"contacts": [], "region": "usa"}',
    b'{"contacts": [], "region": "us", "device_id": "", "batch_id": "b"}',
    b'{"contacts": [], "device_id": "' + b"d" * 129 + b'"}',
    b'{"contacts": [], "batch_id": "' + b"b" * 65 + b'"}',
    b'{"contacts": [], "force": true, "final": false, "batch_id": "b-1"}',
    b'{"contacts": [{"phone": "1", "phone": "2"}]}',
    b'{"contacts": []} x',
    b'\xef\xbb\xbf{"contacts": []}',
    b'{"contacts": [{"phone": "\xed\xa0\x80"}]}',
]


@pytest.mark.parametrize("raw", BODIES)
def test_the_fast_decoder_answers_as_the_model(raw: bytes) -> None:
    assert _outcome(parse_upload, raw) == _outcome(_model, raw)


_text = st.text(
    st.characters(codec="utf-8", exclude_categories=["Cs"])
    | st.sampled_from(" \t\n\x00\xa0\u2028"),
    max_size=70,
)
_contact = st.fixed_dictionaries(
    {"phone": _text | st.integers()},
    optional={
        "name": _text | st.none() | st.text(max_size=205),
        "destroy": st.booleans() | st.none(),
    },
)


@settings(max_examples=300, deadline=None)
@given(
    contacts=st.lists(_contact, max_size=4),
    extra=st.fixed_dictionaries(
        {},
        optional={
            "region": _text | st.none(),
            "device_id": _text | st.none(),
            "batch_id": _text | st.none(),
            "force": st.booleans(),
            "final": st.booleans() | st.integers(),
        },
    ),
    ascii=st.booleans(),
)
def test_any_body_is_decoded_as_the_model_does(
    contacts: list[dict[str, Any]], extra: dict[str, Any], ascii: bool
) -> None:
    raw = json.dumps({"contacts": contacts, **extra}, ensure_ascii=ascii).encode()
    assert _outcome(parse_upload, raw) == _outcome(_model, raw)
