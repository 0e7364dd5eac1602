"""The import rules of shared/STYLE.md, checked on the source: storage is the bottom layer,
protocol and domain code don't import Quart, accounts don't import oauth, nothing imports admin."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "idp"
# The Quart-facing modules of a package: one per audience (pages, JSON API).
WEB_MODULES = {"routes.py", "api.py", "mfa_routes.py", "session_routes.py"}


def imports_of(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def modules(subpackage: str) -> list[Path]:
    return sorted((PACKAGE / subpackage).rglob("*.py"))


def rel(path: Path) -> str:
    return str(path.relative_to(PACKAGE.parent))


@pytest.mark.parametrize("path", modules("storage"), ids=rel)
def test_storage_imports_nothing_above_it(path: Path) -> None:
    upward = {name for name in imports_of(path) if name.startswith("idp") and not name.startswith("idp.storage")}
    assert upward == set()


@pytest.mark.parametrize(
    "path", [p for p in modules("oauth") + modules("accounts") if p.name not in WEB_MODULES], ids=rel
)
def test_protocol_and_domain_modules_do_not_import_quart(path: Path) -> None:
    web = {name for name in imports_of(path) if name.split(".")[0] in ("quart", "werkzeug", "idp.app")}
    assert web == set()
    assert "idp.app" not in imports_of(path)


@pytest.mark.parametrize("path", modules("accounts"), ids=rel)
def test_accounts_do_not_import_oauth(path: Path) -> None:
    assert {name for name in imports_of(path) if name.startswith("idp.oauth")} == set()


@pytest.mark.parametrize("path", [p for p in PACKAGE.rglob("*.py") if "admin" not in p.parts], ids=rel)
def test_nothing_imports_admin(path: Path) -> None:
    if path.name == "app.py" and path.parent == PACKAGE:
        return  # the factory registers the admin blueprints
    assert {name for name in imports_of(path) if name.startswith("idp.admin")} == set()
