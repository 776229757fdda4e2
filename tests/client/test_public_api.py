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
