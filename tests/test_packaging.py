"""Packaging by extras: the base install is the SDK alone; the server and the command line are
extras (`contactsync[server]`, `contactsync[cli]`)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SERVER_ONLY = ("fastapi", "starlette", "uvicorn", "sqlalchemy", "alembic", "asyncpg", "redis")

# Imports the SDK in a fresh interpreter and reports what that loaded.
PROBE = """
import json, sys
import contactsync.client
from contactsync.client import ContactsManager, VCardSource
print(json.dumps(sorted(sys.modules)))
"""


def loaded_by_sdk(python: str | Path) -> list[str]:
    out = subprocess.run(
        [str(python), "-c", PROBE], capture_output=True, text=True, timeout=60, check=True
    )
    return list(json.loads(out.stdout))


def test_importing_the_sdk_loads_no_server_module() -> None:
    # Here the server is installed too: the SDK must still not pull it in.
    modules = loaded_by_sdk(sys.executable)
    assert "contactsync.client" in modules
    bad = [
        m for m in modules if m.split(".")[0] in SERVER_ONLY or m.startswith("contactsync.server")
    ]
    assert bad == []


@pytest.fixture(scope="module")
def base_install(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with only the base install of this checkout (no extras)."""
    root = tmp_path_factory.mktemp("base-install")
    # Built from a copy, so the build leaves nothing behind in the checkout.
    source = root / "source"
    shutil.copytree(
        REPO / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
    )
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    venv.create(root / "venv", with_pip=False)
    python = root / "venv" / "bin" / "python"
    # The outer pip installs into the new environment (no pip bootstrap there); wheels come
    # from pip's cache and the configured local indexes.
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", str(source)],
        check=True,
        timeout=600,
    )
    return python


@pytest.mark.slow
def test_base_install_is_the_sdk_alone(base_install: Path) -> None:
    listed = subprocess.run(
        [
            str(base_install),
            "-c",
            "import importlib.metadata as m, json;"
            "print(json.dumps(sorted(d.metadata['Name'].lower() for d in m.distributions())))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    installed = set(json.loads(listed.stdout))
    assert "contactsync" in installed and "httpx" in installed and "phonenumbers" in installed
    assert installed.isdisjoint({*SERVER_ONLY, "typer", "rich"}), installed
    modules = loaded_by_sdk(base_install)
    assert "contactsync.client" in modules
    assert not [m for m in modules if m.startswith("contactsync.server")]


@pytest.mark.slow
def test_base_install_names_the_missing_extras(base_install: Path) -> None:
    server = subprocess.run(
        [str(base_install), "-c", "import contactsync.server"], capture_output=True, text=True
    )
    assert server.returncode != 0
    assert 'pip install "contactsync[server]"' in server.stderr
    assert "ModuleNotFoundError" in server.stderr
    command = subprocess.run(
        [str(base_install.parent / "contactsync"), "--help"], capture_output=True, text=True
    )
    assert command.returncode == 2
    assert 'pip install "contactsync[cli]"' in command.stderr
