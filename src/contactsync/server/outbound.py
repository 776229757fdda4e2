"""Outgoing HTTP (push and OTP webhooks, the console's test push): one TLS context per process.

Building a TLS context loads the CA bundle, about 20 ms of CPU; httpx builds one per client,
and the OTP sender and the console make a client per call. They all share this one instead,
made on first use with httpx's own defaults (SSL_CERT_FILE / SSL_CERT_DIR, else certifi).
"""

from __future__ import annotations

import functools
import ssl
from typing import Any

import httpx


@functools.cache
def tls_context() -> ssl.SSLContext:
    return httpx.create_ssl_context()


def client(**options: Any) -> httpx.AsyncClient:
    """An `httpx.AsyncClient` verifying TLS with the process's shared context."""
    return httpx.AsyncClient(verify=tls_context(), **options)
