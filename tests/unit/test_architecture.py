"""The import rules of shared/STYLE.md, checked on the source: storage is the bottom layer,
protocol and domain code don't import Quart, accounts don't import oauth, nothing imports admin.
Within accounts, the web layer shows in the file names, and its modules don't import each other."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from idp.accounts import blueprints

PACKAGE = Path(__file__).resolve().parents[2] / "idp"
# The Quart-facing modules, by name. oauth: routes.py. accounts: a pages.py per feature, the account
# API (api.py), and web.py with what those share. admin: the same, its pages in *_pages.py.
OAUTH_WEB_MODULES = {"routes.py"}
ACCOUNT_ROUTE_MODULES = {"pages.py", "api.py", "socket.py"}
ACCOUNT_WEB_MODULES = ACCOUNT_ROUTE_MODULES | {"web.py"}
MAX_ACCOUNT_MODULE_LINES = 600


def is_web_module(path: Path) -> bool:
    parts = path.relative_to(PACKAGE).parts
    if "oauth" in parts:
        return path.name in OAUTH_WEB_MODULES
    # admin: web.py (the blueprint and its guard), api.py, and a *_pages.py per audience of pages.
    return path.name in ACCOUNT_WEB_MODULES or ("admin" in parts and path.name.endswith("_pages.py"))


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


@pytest.mark.parametrize("path", modules("security") + modules("storage"), ids=rel)
def test_security_primitives_and_storage_do_not_know_the_framework(path: Path) -> None:
    assert {name for name in imports_of(path) if name.split(".")[0] in ("quart", "werkzeug")} == set()


@pytest.mark.parametrize(
    "path", [p for p in modules("oauth") + modules("accounts") + modules("admin") if not is_web_module(p)], ids=rel
)
def test_protocol_and_domain_modules_do_not_import_quart(path: Path) -> None:
    web = {name for name in imports_of(path) if name.split(".")[0] in ("quart", "werkzeug", "idp.app")}
    assert web == set()
    assert "idp.app" not in imports_of(path)


# The account API is a resource server for the tokens idp.oauth issues: it checks them with the
# protocol's bearer protector, the one thing of idp.oauth that idp.accounts may use.
ACCOUNTS_MAY_IMPORT_FROM_OAUTH = {
    "accounts/api.py": {"idp.oauth.resource"},
    "accounts/live/socket.py": {"idp.oauth.resource"},
}


OUTSIDE_STORAGE = [path for path in PACKAGE.rglob("*.py") if "storage" not in path.relative_to(PACKAGE).parts]


@pytest.mark.parametrize("path", OUTSIDE_STORAGE, ids=rel)
def test_only_storage_imports_sqlalchemy(path: Path) -> None:
    """The protocol, the accounts domain, their pages and the CLI say what they need from storage
    by naming a repository method (idp.storage.repositories) or a unit of work; the SQL, and
    SQLAlchemy itself, stay behind them."""
    assert {name for name in imports_of(path) if name.split(".")[0] == "sqlalchemy"} == set()


def database_sessions_used_directly(path: Path) -> list[str]:
    """``session.<method>(...)`` on a session opened with ``async with <db>.session() as session``:
    the ORM used directly, where a repository should be named instead."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if not isinstance(node, ast.AsyncWith):
            continue
        names = {
            item.optional_vars.id
            for item in node.items
            if isinstance(item.optional_vars, ast.Name)
            and isinstance(item.context_expr, ast.Call)
            and isinstance(item.context_expr.func, ast.Attribute)
            and item.context_expr.func.attr == "session"
        }
        for inner in ast.walk(ast.Module(body=node.body, type_ignores=[])):
            if (
                isinstance(inner, ast.Call)
                and isinstance(inner.func, ast.Attribute)
                and isinstance(inner.func.value, ast.Name)
                and inner.func.value.id in names
            ):
                found.append((inner.lineno, f"line {inner.lineno}: {inner.func.value.id}.{inner.func.attr}()"))
    return [where for _, where in sorted(found)]


@pytest.mark.parametrize("path", OUTSIDE_STORAGE, ids=rel)
def test_only_storage_uses_a_database_session_directly(path: Path) -> None:
    assert database_sessions_used_directly(path) == []


def test_the_direct_session_check_finds_what_it_looks_for(tmp_path: Path) -> None:
    module = tmp_path / "example.py"
    module.write_text(
        "async def f(db):\n"
        "    async with db.session() as s:\n"
        "        await UserRepository(s).get('x')\n"
        "        await s.get(User, 'x')\n"
        "        s.add(row)\n"
    )
    assert database_sessions_used_directly(module) == ["line 4: s.get()", "line 5: s.add()"]


@pytest.mark.parametrize("path", modules("accounts"), ids=rel)
def test_accounts_do_not_import_oauth(path: Path) -> None:
    allowed = ACCOUNTS_MAY_IMPORT_FROM_OAUTH.get(str(path.relative_to(PACKAGE)), set())
    assert {name for name in imports_of(path) if name.startswith("idp.oauth")} <= allowed


@pytest.mark.parametrize("path", [p for p in PACKAGE.rglob("*.py") if "admin" not in p.parts], ids=rel)
def test_nothing_imports_admin(path: Path) -> None:
    if path.name == "app.py" and path.parent == PACKAGE:
        return  # the factory registers the admin blueprints
    if path.name == "cli.py" and path.parent == PACKAGE:
        return  # the CLI is the operator's third door to the admin use cases (pages, API, CLI)
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


# -- inside accounts -----------------------------------------------------------------------------------


def _account_module(name: str) -> bool:
    return name.startswith("idp.accounts.")


def _route_module(name: str) -> bool:
    return _account_module(name) and name.rpartition(".")[2] + ".py" in ACCOUNT_ROUTE_MODULES


@pytest.mark.parametrize("path", [p for p in modules("accounts") if p.name in ACCOUNT_WEB_MODULES], ids=rel)
def test_account_web_modules_import_no_route_module(path: Path) -> None:
    """A pages module, the API and their shared web.py import no pages module nor the API: what two
    of them need lives in idp.accounts.web (before, the sign-in pages imported the API's json_body)."""
    name = _module_name(path)
    assert {target for target in _import_graph()[name] if _route_module(target)} == set()


def test_route_modules_are_imported_by_the_blueprint_list_only() -> None:
    """Importing a pages module is what adds its routes: only idp.accounts.blueprints does it."""
    importers = {name for name, edges in _import_graph().items() if any(_route_module(edge) for edge in edges)}
    assert importers == {"idp.accounts.blueprints"}


def test_every_page_module_adds_its_routes() -> None:
    """A pages module missing from idp.accounts.blueprints would leave its URLs unanswered."""
    pages = {_module_name(path) for path in modules("accounts") if path.name == "pages.py"}
    assert {module.__name__ for module in blueprints.PAGE_MODULES} == pages


@pytest.mark.parametrize("path", modules("accounts"), ids=rel)
def test_account_modules_stay_readable_in_one_sitting(path: Path) -> None:
    assert len(path.read_text().splitlines()) <= MAX_ACCOUNT_MODULE_LINES


@pytest.mark.parametrize("path", modules("accounts"), ids=rel)
def test_account_modules_import_at_the_top(path: Path) -> None:
    """Every dependency shows in the import list: no import inside a function (none breaks a cycle)."""
    hidden = [
        f"line {inner.lineno}"
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        for inner in ast.walk(node)
        if isinstance(inner, ast.Import | ast.ImportFrom)
    ]
    assert hidden == []


def test_every_package_ships_in_the_wheel() -> None:
    """pyproject.toml lists the packages explicitly (migrations/ ships as idp_migrations): a new
    subpackage missing from the list works in a checkout and is absent from an installed idp."""
    import tomllib

    listed = set(tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {_module_name(path.parent / "__init__.py") for path in PACKAGE.rglob("__init__.py")}
    assert found <= listed, f"add to [tool.setuptools] packages: {sorted(found - listed)}"


def _readme_layout() -> str:
    readme = (PACKAGE.parent / "README.md").read_text()
    section = readme[readme.index("## Layout") :]
    return section.split("```")[1]


@pytest.mark.parametrize(
    "path", [p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py" and "__pycache__" not in p.parts], ids=rel
)
def test_the_readme_layout_names_every_module(path: Path) -> None:
    """The README's module map is the newcomer's way in: a module it does not name has no room."""
    layout = _readme_layout()
    assert path.name in layout or re.search(rf"\b{path.stem}\b", layout), f"README layout omits {rel(path)}"


@pytest.mark.parametrize("package", sorted({p.parent for p in PACKAGE.rglob("__init__.py")} - {PACKAGE}), ids=rel)
def test_the_readme_layout_names_every_package(package: Path) -> None:
    assert f"{package.name}/" in _readme_layout()
