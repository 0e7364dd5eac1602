"""Settings: sources, precedence, validation messages, dev secrets, and the documented example."""

from __future__ import annotations

import os
import stat
import tomllib
from pathlib import Path

import pytest

from idp.config import ConfigError, generate_secrets, load_settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def secrets_env() -> dict[str, str]:
    values = generate_secrets()
    return {
        "IDP_SECRETS__COOKIE_SECRET": values["cookie_secret"],
        "IDP_SECRETS__KEY_ENCRYPTION_KEY": values["key_encryption_key"],
    }


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "idp.toml"
    path.write_text(text)
    return path


def error_of(**kwargs) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(**kwargs)
    message = str(info.value)
    assert "\n" not in message, "a config error is one line"
    return message


def test_documented_env_names_work_exactly_as_spelled(secrets_env) -> None:
    settings = load_settings(
        environ={
            **secrets_env,
            "IDP_ISSUER": "https://id.example.com",
            "IDP_DATABASE_URL": "postgresql+asyncpg://idp:pw@db/idp",
            "IDP_REDIS_URL": "redis://cache:6379/2",
            "IDP_SERVER__PORT": "9000",
            "IDP_KEYS__ALGORITHMS": '["ES256", "EdDSA", "RS256"]',
        }
    )
    assert settings.issuer == "https://id.example.com"
    assert settings.database_url == "postgresql+asyncpg://idp:pw@db/idp"
    assert settings.redis_url == "redis://cache:6379/2"
    assert settings.server.port == 9000
    assert settings.keys.algorithms == ["ES256", "Ed25519", "RS256"]


def test_precedence_defaults_file_environment_overrides(tmp_path, secrets_env) -> None:
    path = write(
        tmp_path,
        'issuer = "https://file.example"\nredis_url = "redis://cache:6379/0"\n[server]\nport = 7000\nworkers = 3\n',
    )
    settings = load_settings(path, environ={**secrets_env, "IDP_SERVER__PORT": "7100"})
    assert settings.issuer == "https://file.example"  # file beats default
    assert settings.server.port == 7100  # environment beats file
    assert settings.server.workers == 3
    assert settings.server.host == "127.0.0.1"  # default
    forced = load_settings(path, environ=secrets_env, overrides={"server": {"port": 1}})
    assert forced.server.port == 1


def test_config_file_found_through_idp_config(tmp_path, secrets_env) -> None:
    path = write(tmp_path, 'issuer = "https://via-env.example"\n')
    settings = load_settings(environ={**secrets_env, "IDP_CONFIG": str(path)})
    assert settings.issuer == "https://via-env.example"


def test_explicit_path_wins_over_idp_config(tmp_path, secrets_env) -> None:
    chosen = write(tmp_path, 'issuer = "https://chosen.example"\n')
    other = tmp_path / "other.toml"
    other.write_text('issuer = "https://other.example"\n')
    settings = load_settings(chosen, environ={**secrets_env, "IDP_CONFIG": str(other)})
    assert settings.issuer == "https://chosen.example"


def test_unknown_key_in_file_is_named_with_its_file(tmp_path, secrets_env) -> None:
    path = write(tmp_path, "[server]\nbogus = 1\n")
    message = error_of(config_path=path, environ=secrets_env)
    assert message == f"server.bogus: unknown setting [from {path}]"


def test_a_table_may_be_given_as_a_json_object(secrets_env) -> None:
    settings = load_settings(
        environ={**secrets_env, "IDP_RATE_LIMITS__TOKEN_PER_IP": '{"requests": 5000, "window": 60}'}
    )
    assert (settings.rate_limits.token_per_ip.requests, settings.rate_limits.token_per_ip.window) == (5000, 60)


def test_unknown_environment_variable_is_named(secrets_env) -> None:
    message = error_of(environ={**secrets_env, "IDP_SERVER__PROT": "80"})
    assert message == "server.prot: unknown setting [from IDP_SERVER__PROT]"


def test_wrong_type_names_key_value_and_source(secrets_env) -> None:
    message = error_of(environ={**secrets_env, "IDP_SERVER__PORT": "eighty"})
    assert message.startswith("server.port: ")
    assert "'eighty'" in message
    assert message.endswith("[from IDP_SERVER__PORT]")


def test_out_of_range_value(tmp_path, secrets_env) -> None:
    path = write(tmp_path, "[tokens]\nauthorization_code_ttl = 3600\n")
    message = error_of(config_path=path, environ=secrets_env)
    assert message.startswith("tokens.authorization_code_ttl: Input should be less than or equal to 600")


def test_invalid_toml_and_missing_file(tmp_path, secrets_env) -> None:
    path = write(tmp_path, "issuer = \n")
    assert error_of(config_path=path, environ=secrets_env).startswith(f"config file {path}: invalid TOML")
    missing = tmp_path / "missing.toml"
    assert error_of(config_path=missing, environ=secrets_env) == f"config file {missing}: not found"


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"IDP_DATABASE_URL": "mysql://x"}, "database_url: must start with sqlite+aiosqlite://"),
        ({"IDP_REDIS_URL": "http://x"}, "redis_url: must be a redis://"),
        ({"IDP_ISSUER": "https://id.example/?a=b"}, "issuer: must not contain a query or fragment"),
        ({"IDP_ISSUER": "id.example"}, "issuer: must be an absolute http(s) URL"),
        ({"IDP_ISSUER": "http://id.example.com"}, "issuer: must be https outside dev mode"),
        ({"IDP_KEYS__ALGORITHMS": '["HS256"]'}, "keys.algorithms: Input should be"),
        ({"IDP_KEYS__ALGORITHMS": '["EdDSA", "Ed25519"]'}, "keys.algorithms: lists an algorithm twice"),
        ({"IDP_KEYS__ALGORITHMS": '["ES256"]'}, "keys.algorithms: must include RS256"),
        ({"IDP_TOKENS__REFRESH_TOKEN_IDLE_TTL": "2592001"}, "tokens: refresh_token_idle_ttl must not exceed"),
        (
            {"IDP_RATE_LIMITS__TOKEN_PER_IP": '{"requests": 5000}'},
            "rate_limits.token_per_ip.window: Field required [from IDP_RATE_LIMITS__TOKEN_PER_IP]",
        ),
        ({"IDP_RATE_LIMITS__TOKEN_PER_IP": '{"requests": 5000'}, "IDP_RATE_LIMITS__TOKEN_PER_IP: not a valid JSON"),
        ({"IDP_RATE_LIMITS__TOKEN_PER_IP": '{"requests": 1, "window": 60, "x": 1}'}, "rate_limits.token_per_ip.x"),
    ],
)
def test_bad_values_are_named(secrets_env, env, expected) -> None:
    assert error_of(environ={**secrets_env, **env}).startswith(expected)


@pytest.mark.parametrize(
    "host",
    ["127.evil.example", "127.0.0.1.nip.io", "localhost.evil.example", "evil-localhost", "128.0.0.1", "0.0.0.0"],
)
def test_http_issuer_only_for_loopback_ips_and_localhost(secrets_env, host) -> None:
    """L10, RFC 9700 §2.6: a name that merely starts with "127." is not loopback; it resolves
    wherever its owner wants, so http there would send codes and cookies in the clear."""
    message = error_of(environ={**secrets_env, "IDP_ISSUER": f"http://{host}:8000"})
    assert message.startswith("issuer: must be https outside dev mode")


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.10", "[::1]", "localhost"])
def test_http_issuer_accepted_on_loopback(secrets_env, host) -> None:
    settings = load_settings(environ={**secrets_env, "IDP_ISSUER": f"http://{host}:8000"})
    assert settings.issuer == f"http://{host}:8000"


@pytest.mark.parametrize("dev_mode", ["false", "true"])
def test_several_workers_need_redis(tmp_path, secrets_env, dev_mode) -> None:
    """H1: without Redis each worker process has its own store, so a token revoked, an assertion
    used or a session ended in one worker would still work in the others (RFC 7009 §2.2,
    RFC 7523 §3, ASVS 7.4.1). The one line names both settings."""
    env = {**secrets_env, "IDP_DEV_MODE": dev_mode, "IDP_DATA_DIR": str(tmp_path), "IDP_SERVER__WORKERS": "2"}
    message = error_of(environ=env)
    assert message.startswith("server.workers: 2 worker processes need redis_url")
    assert message.endswith("set redis_url or run 1 worker")
    settings = load_settings(environ={**env, "IDP_REDIS_URL": "redis://127.0.0.1:6379/0"})
    assert settings.server.workers == 2
    assert load_settings(environ={**env, "IDP_SERVER__WORKERS": "1"}).server.workers == 1


def test_secrets_have_no_default_outside_dev_mode(secrets_env) -> None:
    message = error_of(environ={"IDP_SECRETS__KEY_ENCRYPTION_KEY": secrets_env["IDP_SECRETS__KEY_ENCRYPTION_KEY"]})
    assert message.startswith("secrets.cookie_secret: required outside dev mode")
    message = error_of(environ={"IDP_SECRETS__COOKIE_SECRET": secrets_env["IDP_SECRETS__COOKIE_SECRET"]})
    assert message.startswith("secrets.key_encryption_key: required outside dev mode")


def test_weak_or_malformed_secrets_are_refused_without_echoing_them(secrets_env) -> None:
    message = error_of(environ={**secrets_env, "IDP_SECRETS__COOKIE_SECRET": "short-secret"})
    assert message.startswith("secrets.cookie_secret: must be at least 32 characters")
    assert "short-secret" not in message
    message = error_of(environ={**secrets_env, "IDP_SECRETS__KEY_ENCRYPTION_KEY": "QUJD"})
    assert message.startswith("secrets.key_encryption_key: must be 32 bytes encoded as base64url (got 3 bytes)")


def test_dev_mode_generates_secrets_once_with_private_permissions(tmp_path) -> None:
    env = {"IDP_DEV_MODE": "true", "IDP_DATA_DIR": str(tmp_path / "var"), "IDP_ISSUER": "http://dev.local:8000"}
    first = load_settings(environ=env)
    second = load_settings(environ=env)
    assert first.secrets.cookie_secret is not None and first.secrets.key_encryption_key is not None
    assert first.secrets.cookie_secret.get_secret_value() == second.secrets.cookie_secret.get_secret_value()
    assert first.secrets.key_encryption_key.get_secret_value() == second.secrets.key_encryption_key.get_secret_value()
    mode = stat.S_IMODE(os.stat(tmp_path / "var" / "dev-secrets.json").st_mode)
    assert mode == 0o600
    assert first.log_format == "text"


def test_example_file_documents_every_key_with_its_default(secrets_env) -> None:
    example = tomllib.loads((ROOT / "config.example.toml").read_text())
    defaults = load_settings(environ=secrets_env).model_dump(mode="json")
    documented = load_settings(ROOT / "config.example.toml", environ=secrets_env).model_dump(mode="json")
    assert documented == defaults

    def keys(data: dict, prefix: str = "") -> set[str]:
        found = set()
        for key, value in data.items():
            found |= keys(value, f"{prefix}{key}.") if isinstance(value, dict) else {prefix + key}
        return found

    commented_secrets = {
        "secrets.cookie_secret",
        "secrets.key_encryption_key",
        "secrets.pairwise_secret",
        "mail.smtp_password",
    }
    assert keys(example) | commented_secrets == keys(defaults)


def test_redacted_view_masks_secrets_and_url_passwords(secrets_env) -> None:
    settings = load_settings(
        environ={
            **secrets_env,
            "IDP_DATABASE_URL": "postgresql+asyncpg://idp:pw123@db/idp",
            "IDP_REDIS_URL": "redis://:redispw@cache:6379/0",
        }
    )
    text = repr(settings.redacted())
    assert "pw123" not in text and "redispw" not in text
    assert secrets_env["IDP_SECRETS__COOKIE_SECRET"] not in text
    assert secrets_env["IDP_SECRETS__KEY_ENCRYPTION_KEY"] not in text


@pytest.mark.parametrize(
    ("env", "ok"),
    [
        ({"IDP_WEBAUTHN__RP_ID": "example.com", "IDP_ISSUER": "https://login.example.com"}, True),
        ({"IDP_WEBAUTHN__RP_ID": "example.org", "IDP_ISSUER": "https://login.example.com"}, False),
        ({"IDP_WEBAUTHN__RP_ID": "ample.com", "IDP_ISSUER": "https://example.com"}, False),
        ({"IDP_WEBAUTHN__ORIGINS": '["https://login.example.com/path"]'}, False),
    ],
)
def test_webauthn_relying_party_must_cover_its_origins(secrets_env, env, ok) -> None:
    if ok:
        assert load_settings(environ={**secrets_env, **env}).webauthn.rp_id == env["IDP_WEBAUTHN__RP_ID"]
    else:
        with pytest.raises(ConfigError, match="webauthn"):
            load_settings(environ={**secrets_env, **env})


def test_rs256_may_follow_the_default_algorithm(secrets_env) -> None:
    settings = load_settings(environ={**secrets_env, "IDP_KEYS__ALGORITHMS": '["ES256", "RS256"]'})
    assert settings.keys.algorithms == ["ES256", "RS256"]
