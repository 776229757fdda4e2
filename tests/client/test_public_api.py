"""`contactsync.client` re-exports the SDK's public names (style.md 7): applications import from
the package, never from its underscore modules."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import contactsync.client as client

# Underscore modules whose __all__ is for the SDK's own use (parsing internals).
INTERNAL = {"contactsync.client._csv", "contactsync.client._vcard"}
# Modules whose every public class is part of the API (they have no __all__ of their own).
ALL_PUBLIC_CLASSES = ("contactsync.client._errors", "contactsync.client._models")


def test_every_exported_name_exists() -> None:
    missing = [name for name in client.__all__ if not hasattr(client, name)]
    assert missing == []
    assert len(client.__all__) == len(set(client.__all__))


def test_every_public_name_of_the_modules_is_exported() -> None:
    unexported: list[str] = []
    for info in pkgutil.iter_modules(client.__path__, "contactsync.client."):
        if info.name in INTERNAL:
            continue
        module = importlib.import_module(info.name)
        names = list(getattr(module, "__all__", []))
        if info.name in ALL_PUBLIC_CLASSES:
            names += [
                name
                for name, value in vars(module).items()
                if inspect.isclass(value)
                and value.__module__ == info.name
                and not name.startswith("_")
            ]
        unexported += [f"{info.name}.{n}" for n in names if n not in client.__all__]
    assert unexported == [], "add these to contactsync.client.__all__: " + ", ".join(unexported)


def test_the_error_tree_is_exported_whole() -> None:
    from contactsync.client import _errors

    tree = [v for v in vars(_errors).values() if inspect.isclass(v) and issubclass(v, Exception)]
    assert {cls.__name__ for cls in tree} <= set(client.__all__)
    assert client.AuthError is client.Unauthorized


# ContactsManager's public surface as applications (and the README) use it: the facade over
# the sync engine and the event router keeps each of these names, their parameters and whether
# they are awaited.
MANAGER_METHODS = {
    "close": ("()", True),
    "conversation": ("(conversation_id)", False),
    "drop_local_database_connection": ("()", False),
    "force_sync": ("()", True),
    "initialize": ("()", True),
    "logout": ("()", True),
    "notify_changed": ("()", False),
    "on": ("(event_type, callback)", False),
    "on_contact_joined": ("(callback)", False),
    "on_contacts_registered": ("(callback)", False),
    "on_conversation": ("(callback)", False),
    "on_event": ("(callback)", False),
    "on_message": ("(callback)", False),
    "on_profile_updated": ("(callback)", False),
    "on_relation_changed": ("(callback)", False),
    "on_sync_requested": ("(callback)", False),
    "poll_events": ("()", True),
    "private_matches": ("()", False),
    "profile": ("(user_or_phone)", False),
    "reconnect_local_database": ("()", False),
    "send_sync_request": ("(reason=None)", True),
    "set_my_profile": ("(fields)", True),
    "start": ("()", True),
    "sync": ("()", True),
    "synchronizer": ("(**options)", False),
}
MANAGER_ATTRIBUTES = {
    "answer_sync_requests",
    "api",
    "batch_size",
    "conversations",
    "device_id",
    "discovery",
    "events_enabled",
    "last_metrics",
    "last_sync_answer",
    "listener_state",
    "on_progress",
    "poll_interval",
    "preferences",
    "region",
    "source",
    "state",
    "state_dir",
    "store",
    "store_path",
    "sync_interval",
    "user",
    "watch_interval",
    "websocket",
    "websocket_retry",
}
MANAGER_ARGUMENTS = (
    "(source, *, server, token, region=None, device_id=None, state_dir=None, batch_size=5000, "
    "transport=None, retry=None, on_progress=None, watch_interval=1.0, sync_interval=None, "
    "events=True, websocket=None, poll_interval=2.0, websocket_retry=30.0, "
    "answer_sync_requests=True, discovery=None)"
)


def _shape(fn: object) -> str:
    signature = inspect.signature(fn)  # type: ignore[arg-type]
    params = [p.replace(annotation=inspect.Parameter.empty) for p in signature.parameters.values()]
    return str(signature.replace(parameters=params, return_annotation=inspect.Signature.empty))


def test_contacts_manager_keeps_its_public_api(tmp_path: object) -> None:
    manager = client.ContactsManager(
        client.VCardSource("book.vcf"), server="http://x", token="t", state_dir=str(tmp_path)
    )
    assert _shape(client.ContactsManager) == MANAGER_ARGUMENTS
    methods = {
        name: (_shape(getattr(manager, name)), inspect.iscoroutinefunction(getattr(manager, name)))
        for name in dir(manager)
        if not name.startswith("_")
        and callable(getattr(manager, name))
        and name not in MANAGER_ATTRIBUTES
    }
    assert methods == MANAGER_METHODS
    attributes = {
        name
        for name in dir(manager)
        if not name.startswith("_") and not callable(getattr(manager, name))
    }
    # on_progress is None here, so not callable: counted as an attribute either way
    assert attributes | {"api", "conversations", "preferences", "source"} == MANAGER_ATTRIBUTES
    # the settings an application may set after construction are read by the running parts
    manager.batch_size = 7
    manager.region = "GB"
    assert (manager.batch_size, manager.region) == (7, "GB")
