"""The import rules of shared/STYLE.md, checked on the source: storage is the bottom layer,
protocol and domain code don't import Quart, accounts don't import oauth, nothing imports admin."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "idp"
# The Quart-facing modules of a package: one per audience (pages, JSON API).
WEB_MODULES = {"routes.py", "pages.py", "api.py", "web.py"}


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


def _module_name(path: Path) -> str:
    name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return name.removesuffix(".__init__")


def _import_graph() -> dict[str, set[str]]:
    """Module -> the idp modules it imports, wherever the import statement is (inside a function
    too: such an import still makes a cycle, it only defers it)."""
    paths = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                edges |= {alias.name for alias in node.names if alias.name in paths}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                submodules = {f"{node.module}.{alias.name}" for alias in node.names} & set(paths)
                edges |= submodules or ({node.module} & set(paths))
        graph[name] = edges - {name}
    return graph


def test_the_factory_is_imported_by_the_package_entry_point_only() -> None:
    """Route modules reach the running app through idp.http (the runtime on app.extensions),
    never through the factory that imports them (which made an 8-module cycle)."""
    importers = {name for name, edges in _import_graph().items() if "idp.app" in edges}
    assert importers == {"idp"}


def test_there_is_no_import_cycle() -> None:
    graph = _import_graph()
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        if name in path:
            raise AssertionError("import cycle: " + " -> ".join([*path[path.index(name) :], name]))
        if name in done:
            return
        for target in sorted(graph[name]):
            visit(target, [*path, name])
        done.add(name)

    for name in sorted(graph):
        visit(name, [])


def test_sign_ins_finish_in_one_place() -> None:
    """Every way of signing in makes its session through idp.accounts.signin.finish.start_session
    (which publishes LoginSucceeded), after the one rule on who may sign in."""
    publishers = {
        rel(path)
        for path in PACKAGE.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "LoginSucceeded"
    }
    assert publishers == {"idp/accounts/signin/finish.py"}
