"""Request bodies and answers through the contract's models (contactsync.protocol), the ones
the server reads and writes with: a field renamed or a limit changed on one side is changed on
the other, and a body the server's model would refuse is refused here, before it is sent,
with the error the server would answer (422 `invalid_request`, or `invalid_text`)."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import ValidationError

from contactsync import errors
from contactsync.client._errors import error_for
from contactsync.protocol import Input, Output

In = TypeVar("In", bound=Input)
Out = TypeVar("Out", bound=Output)


def body(model: type[In], fields: dict[str, Any]) -> In:
    """`fields` as the server reads them: validated from their JSON by the contract's model,
    as the server parses the bytes it receives. Fields left out stay out of what is sent
    (`ApiClient.request` sends the fields set)."""
    try:
        return model.model_validate_json(json.dumps(fields, ensure_ascii=False))
    except ValidationError as exc:
        details = [
            {"field": ".".join(str(p) for p in e["loc"]), "type": e["type"], "message": e["msg"]}
            for e in exc.errors()
        ]
        refused = errors.invalid_input("The request is not valid.", details)
        raise error_for(refused.status, refused.code, refused.message, refused.details) from None


def answer(model: type[Out], data: Any) -> Out:
    """An answer's JSON as the contract's model (a server that broke the contract raises
    pydantic's ValidationError here rather than a KeyError somewhere later)."""
    return model.model_validate(data)
