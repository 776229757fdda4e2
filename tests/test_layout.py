"""The import rules of the layout (README "Layout"), checked on the source tree itself.

- services/ never import the HTTP or WebSocket layers (nor FastAPI/Starlette): they serve both;
- the SDK (client/) and the shared contract modules never import the server;
- users.py imports no other service, and the services import no circle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "contactsync"
SERVICES = SRC / "server" / "services"
SHARED = ("errors.py", "phone.py", "protocol.py")


def imports_of(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside functions (absolute names)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def under(name: str, *packages: str) -> bool:
    return any(name == package or name.startswith(package + ".") for package in packages)


def service_graph() -> dict[str, set[str]]:
    prefix = "contactsync.server.services."
    names = {p.stem for p in SERVICES.glob("*.py") if p.stem != "__init__"}
    return {
        name: {
            imported[len(prefix) :].split(".")[0]
            for imported in imports_of(SERVICES / f"{name}.py")
            if imported.startswith(prefix)
        }
        & (names - {name})
        for name in names
    }


@pytest.mark.parametrize("path", sorted(SERVICES.glob("*.py")), ids=lambda p: p.name)
def test_services_know_nothing_of_http_or_websocket(path: Path) -> None:
    banned = ("contactsync.server.http", "contactsync.server.ws", "fastapi", "starlette")
    bad = sorted(i for i in imports_of(path) if under(i, *banned))
    assert bad == [], f"{path.name} imports {bad}"


@pytest.mark.parametrize(
    "path",
    sorted((SRC / "client").rglob("*.py")) + [SRC / name for name in SHARED],
    ids=lambda p: str(p.relative_to(SRC)),
)
def test_sdk_and_contract_never_import_the_server(path: Path) -> None:
    bad = sorted(i for i in imports_of(path) if under(i, "contactsync.server", "contactsync.cli"))
    assert bad == [], f"{path.relative_to(SRC)} imports {bad}"


def test_users_imports_no_other_service() -> None:
    assert service_graph()["users"] == set()


def test_services_import_no_circle() -> None:
    graph = service_graph()
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        if name in path:
            cycle = path[path.index(name) :] + [name]
            raise AssertionError("import circle: " + " -> ".join(cycle))
        if name in done:
            return
        for dep in sorted(graph[name]):
            visit(dep, [*path, name])
        done.add(name)

    for name in sorted(graph):
        visit(name, [])


def test_the_rule_checker_sees_imports_inside_functions(tmp_path: Path) -> None:
    # The circle used to hide in a function-level import; the checker must see those.
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from contactsync.server.services import relations\n")
    assert "contactsync.server.services.relations" in imports_of(module)


def test_the_process_services_are_typed_fields_not_a_string_keyed_bag() -> None:
    """`Context.services` is a `Services` dataclass: a misspelt or missing service is a mypy
    error, not a KeyError at run time (issue 15.5)."""
    from contactsync.server.context import Context, ReadTx, Services

    assert Context.__dataclass_fields__["services"].type == "Services"
    assert ReadTx.__dataclass_fields__["services"].type == "Services"
    assert "metrics" in Services.__dataclass_fields__
    bag = []
    for path in sorted((SRC / "server").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            # services["…"] or services.get("…") / .pop("…")
            target = node.value if isinstance(node, ast.Subscript) else None
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                if node.func.attr in ("get", "pop", "setdefault"):
                    target = node.func.value
            if isinstance(target, ast.Attribute) and target.attr == "services":
                bag.append(f"{path.relative_to(SRC)}:{node.lineno}")
    assert not bag, bag
