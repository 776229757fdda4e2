"""Console pages and form actions. Pages call services directly; forms post back and redirect.

Every page but the sign-in needs a console session (else: to the sign-in page). Every POST
needs the session's CSRF token (else 403, nothing changes). A failed action re-renders its page
with the reason and a 4xx status. Actions are logged at INFO with the user id, never a number.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from pathlib import Path
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, FastAPI, Request
from fastapi import Path as PathParam
from pydantic import ValidationError
from starlette.datastructures import FormData
from starlette.responses import RedirectResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from contactsync import phone as phones
from contactsync.errors import ApiError, RateLimited
from contactsync.protocol import Text
from contactsync.server import outbound
from contactsync.server.console import forms, queries
from contactsync.server.console import sessions as console_sessions
from contactsync.server.console.sessions import ConsoleSession
from contactsync.server.context import Context
from contactsync.server.metrics import table_exists
from contactsync.server.services import (
    app_settings,
    joins,
    pairs,
    push,
    ratelimit,
    secrets,
    sessions,
    users,
)

log = logging.getLogger("contactsync.console")

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")
router = APIRouter(prefix="/console", include_in_schema=False)

UserId = Annotated[int, PathParam(ge=1, le=2**63 - 1)]

SECURITY_HEADERS = {
    # Scripts and styles only from our own static files: no inline script can run even if some
    # text were ever rendered unescaped.
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    # Not no-referrer: with it, Chromium sends `Origin: null` on form posts, which the
    # same-origin check must refuse.
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

DONE = {
    "signed_out": "Signed out.",
    "saved": "Settings saved.",
    "unchanged": "Nothing to change.",
    "revoked": "Tokens revoked: every device of this user is signed out.",
    "restricted": "The user is now restricted: they may only talk to paired users.",
    "unrestricted": "The user is no longer restricted.",
    "paired": "Paired.",
    "already_paired": "They were already paired.",
    "unpaired": "Unpaired.",
    "not_paired": "They were not paired.",
    "deleted": "The user and everything that belonged to them were deleted.",
    "retried": "The failed deliveries are due again now.",
    "nothing_to_retry": "There was nothing to retry.",
}


def _when(ms: int | None) -> str:
    if not ms:
        return "—"
    moment = dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def _number(value: int | float | None) -> str:
    """40046 -> "40,046" (figures an operator reads at a glance)."""
    return "—" if value is None else f"{int(value):,}"


templates.env.filters["masked"] = phones.mask
templates.env.filters["when"] = _when
templates.env.filters["num"] = _number


def install(app: FastAPI) -> None:
    """Add the console's pages and its static files to the app."""
    app.include_router(router)
    app.mount("/console/static", StaticFiles(directory=HERE / "static"), name="console-static")


def _ctx(request: Request) -> Context:
    ctx: Context = request.app.state.ctx
    return ctx


def page(
    request: Request,
    name: str,
    context: dict[str, Any] | None = None,
    *,
    session: ConsoleSession | None = None,
    status: int = 200,
) -> Response:
    done = request.query_params.get("done")
    base = {
        "session": session,
        "csrf": session.csrf if session else None,
        "flash": DONE.get(done or ""),
        "error": None,
        "nav": name.removesuffix(".html"),
    }
    return templates.TemplateResponse(
        request, name, {**base, **(context or {})}, status_code=status, headers=SECURITY_HEADERS
    )


def _redirect(url: str) -> Response:
    return RedirectResponse(url, status_code=303, headers=SECURITY_HEADERS)


def _refused(request: Request, reason: str, session: ConsoleSession | None = None) -> Response:
    log.warning("console: form refused", extra={"reason": reason})
    return page(
        request,
        "refused.html",
        {"reason": reason},
        session=session,
        status=403,
    )


async def _form(request: Request) -> FormData:
    return await request.form(max_files=0, max_fields=200, max_part_size=64 * 1024)


async def _guard(request: Request) -> tuple[ConsoleSession, FormData] | Response:
    """The session and form of a state-changing POST, or the response refusing it."""
    session = await console_sessions.current(_ctx(request), request)
    if session is None:
        return _redirect("/console/login")
    if not console_sessions.same_origin(request):
        return _refused(request, "The form was sent from another site.", session)
    form = await _form(request)
    submitted = form.get("csrf")
    if not console_sessions.csrf_ok(session, submitted if isinstance(submitted, str) else None):
        return _refused(request, "The form's security token is missing or out of date.", session)
    return session, form


# ----------------------------------------------------------------------------- sign-in


@router.get("")
async def root(request: Request) -> Response:
    session = await console_sessions.current(_ctx(request), request)
    return _redirect("/console/overview" if session else "/console/login")


def _login_page(request: Request, *, error: str | None = None, status: int = 200) -> Response:
    token = console_sessions.login_token(request)
    response = page(request, "login.html", {"login_csrf": token, "error": error}, status=status)
    console_sessions.set_login_cookie(response, request, token)
    return response


@router.get("/login")
async def login_form(request: Request) -> Response:
    if await console_sessions.current(_ctx(request), request) is not None:
        return _redirect("/console/overview")
    return _login_page(request)


@router.post("/login")
async def login(request: Request) -> Response:
    ctx = _ctx(request)
    if not console_sessions.same_origin(request):
        return _refused(request, "The form was sent from another site.")
    form = await _form(request)
    submitted = form.get("csrf")
    if not console_sessions.login_csrf_ok(
        request, submitted if isinstance(submitted, str) else None
    ):
        return _refused(request, "The sign-in form's security token is missing or out of date.")
    client = request.client.host if request.client else "unknown"
    try:
        async with ctx.tx() as tx:
            await ratelimit.hit(
                tx,
                f"console-login:{client}",
                limit=console_sessions.LOGIN_ATTEMPTS,
                window_s=console_sessions.LOGIN_WINDOW_S,
            )
    except RateLimited as exc:
        return _login_page(
            request,
            error=f"Too many sign-in attempts; try again in {exc.retry_after} s.",
            status=429,
        )
    key = form.get("key")
    if not isinstance(key, str) or not console_sessions.key_matches(ctx, key.strip()):
        log.warning("console: sign-in refused (wrong admin key)")
        return _login_page(request, error="That is not the admin key.", status=401)
    response = _redirect("/console/overview")
    await console_sessions.open_session(ctx, response, request)
    log.info("console: signed in")
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    guarded = await _guard(request)
    if isinstance(guarded, Response):
        return guarded
    session, _form_data = guarded
    response = _redirect("/console/login?done=signed_out")
    await console_sessions.close_session(_ctx(request), session, response)
    return response


# ----------------------------------------------------------------------------- overview


def chart(hours: list[int], series: dict[str, list[int]]) -> dict[str, Any]:
    """Bar geometry for an inline SVG: one group of bars per hour, one bar per series."""
    width, height, left, bottom, top = 720, 200, 36, 22, 10
    plot_h = height - bottom - top
    peak = max([1, *(v for values in series.values() for v in values)])
    slot = (width - left) / max(1, len(hours))
    bar = max(2.0, (slot - 4) / max(1, len(series)))
    bars = []
    for i, start in enumerate(hours):
        for j, (name, values) in enumerate(series.items()):
            value = values[i]
            h = round(plot_h * value / peak, 1)
            bars.append(
                {
                    "series": name,
                    "x": round(left + i * slot + 2 + j * bar, 1),
                    "y": round(top + plot_h - h, 1),
                    "w": round(bar - 1, 1),
                    "h": h,
                    "title": f"{_when(start)[11:16]} UTC: {value} {name}",
                }
            )
    # every third hour counted back from the current one, which is labelled "now"
    last = len(hours) - 1
    labels = [
        {
            "x": round(left + i * slot + slot / 2, 1),
            "text": "now" if i == last else _when(start)[11:13] + "h",
        }
        for i, start in enumerate(hours)
        if (last - i) % 3 == 0
    ]
    ticks = [
        {"y": round(top + plot_h - plot_h * f, 1), "text": _number(round(peak * f))}
        for f in (0, 0.5, 1)
    ]
    return {
        "width": width,
        "height": height,
        "bars": bars,
        "labels": labels,
        "ticks": ticks,
        "left": left,
        "base": top + plot_h,
        "series": list(series),
    }


@router.get("/overview")
async def overview(request: Request) -> Response:
    ctx = _ctx(request)
    session = await console_sessions.current(ctx, request)
    if session is None:
        return _redirect("/console/login")
    async with ctx.read() as tx:
        figures = await queries.overview(tx)
    metrics = ctx.services.metrics
    live = (
        metrics.registry.get_sample_value("contactsync_live_sockets")
        if metrics is not None
        else None
    )
    return page(
        request,
        "overview.html",
        {
            "o": figures,
            "chart": chart(figures.hours, {"uploads": figures.uploads, "joins": figures.joins}),
            "live_sockets": live,
        },
        session=session,
    )


# ----------------------------------------------------------------------------- users


@router.get("/users")
async def users_list(request: Request, q: Text = "") -> Response:
    ctx = _ctx(request)
    session = await console_sessions.current(ctx, request)
    if session is None:
        return _redirect("/console/login")
    async with ctx.read() as tx:
        found = await queries.search_users(tx, q, default_region=ctx.settings.default_region)
    return page(
        request,
        "users.html",
        {"q": q, "users": found, "limit": queries.PAGE},
        session=session,
    )


async def _user_page(
    request: Request,
    session: ConsoleSession,
    user_id: int,
    *,
    reveal: bool = False,
    error: str | None = None,
    status: int = 200,
) -> Response:
    ctx = _ctx(request)
    try:
        async with ctx.read() as tx:
            data = await queries.user_page(tx, user_id)
    except ApiError as exc:
        return page(
            request, "missing.html", {"message": exc.message}, session=session, status=exc.status
        )
    return page(
        request,
        "user.html",
        {
            "p": data,
            "reveal": reveal,
            "error": error,
            "mode": ctx.settings.discovery_mode,
        },
        session=session,
        status=status,
    )


@router.get("/users/{user_id}")
async def user_detail(request: Request, user_id: UserId) -> Response:
    session = await console_sessions.current(_ctx(request), request)
    if session is None:
        return _redirect("/console/login")
    return await _user_page(request, session, user_id)


@router.post("/users/{user_id}/reveal")
async def reveal(request: Request, user_id: UserId) -> Response:
    guarded = await _guard(request)
    if isinstance(guarded, Response):
        return guarded
    session, _ = guarded
    log.info("console: phone number revealed", extra={"user_id": user_id})
    return await _user_page(request, session, user_id, reveal=True)


async def _user_action(request: Request, user_id: int, action: str) -> Response:
    """Run one user action from a posted form; redirect on success, re-render on failure."""
    guarded = await _guard(request)
    if isinstance(guarded, Response):
        return guarded
    session, form = guarded
    ctx = _ctx(request)
    try:
        async with ctx.tx() as tx:
            done = await _apply(tx, ctx, user_id, action, form)
    except ApiError as exc:
        # Nothing was changed (the transaction rolled back); show the page with the reason.
        return await _user_page(request, session, user_id, error=exc.message, status=exc.status)
    log.info("console: %s", done, extra={"user_id": user_id})
    if action == "delete":
        return _redirect("/console/users?done=deleted")
    return _redirect(f"/console/users/{user_id}?done={done}")


async def _apply(tx: Any, ctx: Context, user_id: int, action: str, form: FormData) -> str:
    if action == "revoke":
        await users.get(tx, user_id)
        await sessions.revoke_all(tx, user_id)
        return "revoked"
    if action == "restricted":
        value = form.get("restricted") == "1"
        await users.update(tx, user_id, restricted=value, fields_set=frozenset({"restricted"}))
        return "restricted" if value else "unrestricted"
    if action in ("pair", "unpair"):
        await users.get(tx, user_id)
        raw = form.get("other")
        other = await queries.resolve_user(
            tx, raw if isinstance(raw, str) else "", default_region=ctx.settings.default_region
        )
        if action == "pair":
            return "paired" if await pairs.pair(tx, user_id, other.id) else "already_paired"
        return "unpaired" if await pairs.unpair(tx, user_id, other.id) else "not_paired"
    if action == "delete":
        await joins.leave(tx, user_id)
        return "deleted"
    raise AssertionError(action)  # pragma: no cover - routes below name every action


@router.post("/users/{user_id}/revoke")
async def revoke(request: Request, user_id: UserId) -> Response:
    return await _user_action(request, user_id, "revoke")


@router.post("/users/{user_id}/restricted")
async def set_restricted(request: Request, user_id: UserId) -> Response:
    return await _user_action(request, user_id, "restricted")


@router.post("/users/{user_id}/pair")
async def pair(request: Request, user_id: UserId) -> Response:
    return await _user_action(request, user_id, "pair")


@router.post("/users/{user_id}/unpair")
async def unpair(request: Request, user_id: UserId) -> Response:
    return await _user_action(request, user_id, "unpair")


@router.post("/users/{user_id}/delete")
async def delete(request: Request, user_id: UserId) -> Response:
    return await _user_action(request, user_id, "delete")


# ----------------------------------------------------------------------------- settings


async def _settings_page(
    request: Request,
    session: ConsoleSession,
    *,
    submitted: dict[str, Any] | None = None,
    errors: dict[str, str] | None = None,
    test_result: dict[str, Any] | None = None,
    status: int = 200,
) -> Response:
    ctx = _ctx(request)
    async with ctx.read() as tx:
        current = await app_settings.load(tx)
    form = forms.build(current, submitted, errors)
    return page(
        request,
        "settings.html",
        {
            "form": form,
            "error": "The settings were not saved: fix the fields marked below."
            if errors
            else None,
            "general_error": (errors or {}).get("__all__"),
            "test_result": test_result,
            "webhook_set": current.push_webhook_url is not None,
        },
        session=session,
        status=status,
    )


@router.get("/settings")
async def settings_form(request: Request) -> Response:
    session = await console_sessions.current(_ctx(request), request)
    if session is None:
        return _redirect("/console/login")
    return await _settings_page(request, session)


@router.post("/settings")
async def save_settings(request: Request) -> Response:
    guarded = await _guard(request)
    if isinstance(guarded, Response):
        return guarded
    session, form = guarded
    ctx = _ctx(request)
    async with ctx.read() as tx:
        current = await app_settings.load(tx)
    changes, errors = forms.parse(form, current)
    if not errors and changes:
        try:
            async with ctx.tx() as tx:
                await app_settings.update(tx, changes)
        except ValidationError as exc:
            errors = forms.validation_errors(exc)
    if errors:
        shown = {k: v for k, v in changes.items() if "secret" not in k}
        return await _settings_page(request, session, submitted=shown, errors=errors, status=400)
    if changes:
        log.info("console: settings changed", extra={"settings": sorted(changes)})
    return _redirect("/console/settings?done=" + ("saved" if changes else "unchanged"))


@router.post("/settings/test")
async def test_webhook(request: Request) -> Response:
    """POST a signed test payload to the push webhook and show what it answered."""
    guarded = await _guard(request)
    if isinstance(guarded, Response):
        return guarded
    session, _ = guarded
    ctx = _ctx(request)
    async with ctx.read() as tx:
        current = await app_settings.load(tx)
        now = tx.now
    result = await send_test(current, now)
    log.info("console: webhook test", extra={"ok": result["ok"], "status": result.get("status")})
    return await _settings_page(request, session, test_result=result)


async def send_test(current: app_settings.AppSettings, now: int) -> dict[str, Any]:
    """One signed test POST, shaped like a real push with no deliveries."""
    if current.push_webhook_url is None or not current.push_webhook_secret:
        return {"ok": False, "message": "Set the webhook URL and secret first, then save."}
    body = json.dumps(
        {"test": True, "deliveries": [], "sent_at": now}, separators=(",", ":")
    ).encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "contactsync-console",
        "X-Contactsync-Signature": secrets.sign(current.push_webhook_secret, body),
    }
    try:
        async with outbound.client(timeout=5.0, follow_redirects=False) as client:
            answer = await client.post(str(current.push_webhook_url), content=body, headers=headers)
    except httpx.HTTPError as exc:
        return {"ok": False, "message": f"The webhook could not be reached ({type(exc).__name__})."}
    ok = 200 <= answer.status_code < 300
    return {
        "ok": ok,
        "status": answer.status_code,
        "message": f"The webhook answered {answer.status_code}"
        + (" — it works." if ok else " — pushes would be retried and then fail."),
    }


# ----------------------------------------------------------------------------- push outbox


@router.get("/outbox")
async def outbox(request: Request, state: str = "failed", after: int = 0) -> Response:
    """Push webhook deliveries by state, each with its attempts and last error."""
    ctx = _ctx(request)
    session = await console_sessions.current(ctx, request)
    if session is None:
        return _redirect("/console/login")
    if state not in push.STATES:
        state = "failed"
    after = min(max(after, 0), 2**63 - 1)
    async with ctx.read() as tx:
        if not await table_exists(tx.conn, "push_outbox"):
            rows: list[dict[str, Any]] = []
            counts = None
        else:
            rows = await push.listing(tx, state, after, queries.PAGE)
            counts = await push.counts(tx)
    return page(
        request,
        "outbox.html",
        {
            "state": state,
            "states": push.STATES,
            "rows": rows,
            "counts": counts,
            "next_after": rows[-1]["id"] if len(rows) == queries.PAGE else None,
        },
        session=session,
    )


@router.post("/outbox/retry")
async def outbox_retry(request: Request) -> Response:
    """Retry one failed delivery (`id`) or all of them (no id)."""
    guarded = await _guard(request)
    if isinstance(guarded, Response):
        return guarded
    _session, form = guarded
    raw = form.get("id")
    ids = [int(raw)] if isinstance(raw, str) and raw.isdigit() and len(raw) <= 18 else None
    ctx = _ctx(request)
    async with ctx.tx() as tx:
        count = await push.retry_failed(tx, ids)
    worker = ctx.services.push
    if count and worker is not None:
        await worker.wake()
    log.info("console: push deliveries retried", extra={"count": count})
    return _redirect("/console/outbox?done=" + ("retried" if count else "nothing_to_retry"))
