"""The protocol core's one-home rules, checked on the code: discovery advertises what the code
implements, the standard scopes are defined once, and oauth/routes.py only translates HTTP."""

from __future__ import annotations

import ast
from pathlib import Path

from idp.accounts.signin import authn
from idp.oauth import clients, pkce
from idp.oauth.authorize import PROMPTS, RESPONSE_MODES
from idp.oauth.discovery import provider_metadata
from idp.oauth.grants import GRANTS
from idp.oauth.scopes import SCOPE_DESCRIPTIONS, STANDARD_SCOPES, USER_SCOPES, describe_scope

OAUTH = Path(__file__).resolve().parents[3] / "idp" / "oauth"


def metadata(*, registration: bool = False) -> dict[str, object]:
    return provider_metadata("https://idp.example", ["RS256"], pairwise=False, registration=registration)


def test_discovery_advertises_the_grant_registry() -> None:
    assert metadata()["grant_types_supported"] == list(GRANTS)
    assert clients.GRANT_TYPES == tuple(GRANTS)


def test_discovery_advertises_the_standard_scopes_pkce_and_response_modes() -> None:
    data = metadata()
    assert data["scopes_supported"] == list(STANDARD_SCOPES)
    assert data["code_challenge_methods_supported"] == list(pkce.METHODS) == ["S256"]
    assert data["response_modes_supported"] == list(RESPONSE_MODES)
    assert data["acr_values_supported"] == list(authn.ACR_VALUES)


def test_prompt_create_is_advertised_only_with_registration() -> None:
    assert metadata()["prompt_values_supported"] == ["none", "login", "consent", "select_account"]
    assert metadata(registration=True)["prompt_values_supported"] == list(PROMPTS)


def test_every_standard_scope_is_described_and_about_a_user() -> None:
    assert set(SCOPE_DESCRIPTIONS) == set(STANDARD_SCOPES) == USER_SCOPES
    assert describe_scope("reports:read") == "reports:read"


def _standard_scope_literals(path: Path) -> list[str]:
    """offline_access anywhere, or a literal list, tuple or set naming two standard scopes."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Constant) and node.value == "offline_access":
            found.append(f"line {node.lineno}: offline_access")
        elif isinstance(node, ast.Tuple | ast.List | ast.Set):
            named = {item.value for item in node.elts if isinstance(item, ast.Constant)} & set(STANDARD_SCOPES)
            if len(named) > 1:
                found.append(f"line {node.lineno}: {sorted(named)}")
    return found


def test_the_standard_scopes_are_written_down_once() -> None:
    for path in sorted(OAUTH.glob("*.py")):
        if path.name != "scopes.py":
            assert _standard_scope_literals(path) == [], path.name


def _imported_modules(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def test_the_routes_talk_to_no_storage() -> None:
    """oauth/routes.py reads the request, calls the core, renders: no repository, no SQL."""
    imported = _imported_modules(OAUTH / "routes.py")
    assert not {name for name in imported if name.startswith(("sqlalchemy", "idp.storage.repositories"))}
    assert "idp.storage.db" not in imported


def test_the_routes_stay_thin_and_no_module_grows_past_600_lines() -> None:
    sizes = {path.name: len(path.read_text().splitlines()) for path in OAUTH.glob("*.py")}
    assert sizes["routes.py"] < 400, sizes["routes.py"]
    assert max(sizes.values()) <= 600, sizes
