"""Log masking at INFO and above, in both formats: numbers, tokens, admin keys and credential
query values (the real-server check is tests/e2e/test_log_secrets.py)."""

from __future__ import annotations

import io
import json
import logging

import pytest

from contactsync.server.logging import JsonFormatter, TextFormatter
from contactsync.server.services import secrets

TOKEN = secrets.new_token()
ADMIN = secrets.new_admin_key()


@pytest.mark.parametrize("formatter", [JsonFormatter(), TextFormatter()])
def test_tokens_keys_and_numbers_are_masked(formatter: logging.Formatter) -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    log = logging.getLogger("test.redaction")
    log.addHandler(handler)
    log.propagate = False
    log.setLevel(logging.DEBUG)
    try:
        log.info('%s - "WebSocket /v1/events/ws?token=%s&after=0" [accepted]', "1.2.3.4:5", TOKEN)
        log.warning("key %s for +1 (415) 555-0100", ADMIN, extra={"who": TOKEN})
        log.info("GET /x?KEY=plain-secret-without-prefix&after=5")
        try:
            raise ValueError(f"bad token {TOKEN}")
        except ValueError:
            log.exception("failed")
        log.debug("debug keeps %s", "+14155550100")
    finally:
        log.removeHandler(handler)
    text = out.getvalue()
    assert TOKEN not in text and TOKEN[3:] not in text
    assert ADMIN not in text and ADMIN[8:] not in text
    assert "plain-secret-without-prefix" not in text
    info = text[: text.index("debug keeps")]
    assert "4155550100" not in info and "555-0100" not in info
    assert "after=0" in text and "after=5" in text  # the rest of the query stays readable
    assert "debug keeps +14155550100" in text
    if isinstance(formatter, JsonFormatter):
        assert all(json.loads(line) for line in text.splitlines())
