"""The admin web console at `/console`: server-rendered pages for the app team.

Signed in with the admin key; the session lives in an HttpOnly, SameSite=Strict cookie and
every form carries a CSRF token. Pages call services directly (no HTTP round trip to our own
API). `routes.py` has the pages, `sessions.py` the sign-in and CSRF rules, `queries.py` the
read-only figures the pages show, `forms.py` the settings form.
"""

from __future__ import annotations

from contactsync.server.console.routes import install

__all__ = ["install"]
