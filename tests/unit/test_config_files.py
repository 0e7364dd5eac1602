"""Secrets from files (IDP_<NAME>_FILE) and the [metrics] exposure rule."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from idp.config import ConfigError, file_settings, generate_secrets, load_settings


@pytest.fixture
def secret_values() -> dict[str, str]:
    return generate_secrets()


def write_secret(tmp_path: Path, name: str, content: str) -> str:
    path = tmp_path / name
    path.write_text(content)
    path.chmod(0o600)
    return str(path)


def error_of(environ: dict[str, str]) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(environ=environ)
    message = str(info.value)
    assert "\n" not in message, "a config error is one line"
    return message


def test_every_secret_setting_and_url_can_come_from_a_file(tmp_path: Path, secret_values: dict[str, str]) -> None:
    assert file_settings() >= {
        ("secrets", "cookie_secret"),
        ("secrets", "key_encryption_key"),
        ("secrets", "pairwise_secret"),
        ("secrets", "previous_key_encryption_keys"),
        ("mail", "smtp_password"),
        ("pictures", "s3_access_key"),
        ("pictures", "s3_secret_key"),
        ("metrics", "bearer_token"),
        ("database_url",),
        ("redis_url",),
    }
    old_kek = generate_secrets()["key_encryption_key"]
    env = {
        # one trailing newline, as `echo` and most editors leave it
        "IDP_SECRETS__COOKIE_SECRET_FILE": write_secret(tmp_path, "cookie", secret_values["cookie_secret"] + "\n"),
        "IDP_SECRETS__KEY_ENCRYPTION_KEY_FILE": write_secret(tmp_path, "kek", secret_values["key_encryption_key"]),
        "IDP_SECRETS__PREVIOUS_KEY_ENCRYPTION_KEYS_FILE": write_secret(tmp_path, "old", f'["{old_kek}"]\n'),
        "IDP_MAIL__SMTP_PASSWORD_FILE": write_secret(tmp_path, "smtp", "p@ss word\r\n"),
        "IDP_DATABASE_URL_FILE": write_secret(tmp_path, "db", "postgresql+asyncpg://idp:s3cret@db/idp\n"),
        "IDP_METRICS__BEARER_TOKEN_FILE": write_secret(tmp_path, "metrics", "m" * 40 + "\n"),
    }
    settings = load_settings(environ=env)
    assert settings.secrets.cookie_secret is not None
    assert settings.secrets.cookie_secret.get_secret_value() == secret_values["cookie_secret"]
    assert settings.secrets.key_encryption_key is not None
    assert settings.secrets.key_encryption_key.get_secret_value() == secret_values["key_encryption_key"]
    assert [key.get_secret_value() for key in settings.secrets.previous_key_encryption_keys] == [old_kek]
    assert settings.mail.smtp_password is not None
    assert settings.mail.smtp_password.get_secret_value() == "p@ss word"  # inner spaces kept
    assert settings.database_url == "postgresql+asyncpg://idp:s3cret@db/idp"
    assert settings.metrics.bearer_token is not None
    assert settings.metrics.bearer_token.get_secret_value() == "m" * 40


def test_a_value_and_its_file_together_are_refused(tmp_path: Path, secret_values: dict[str, str]) -> None:
    env = {
        "IDP_SECRETS__COOKIE_SECRET": secret_values["cookie_secret"],
        "IDP_SECRETS__COOKIE_SECRET_FILE": write_secret(tmp_path, "cookie", secret_values["cookie_secret"]),
    }
    message = error_of(env)
    assert "IDP_SECRETS__COOKIE_SECRET_FILE" in message and "IDP_SECRETS__COOKIE_SECRET is set as well" in message
    assert secret_values["cookie_secret"] not in message


@pytest.mark.parametrize("problem", ["missing", "directory", "unreadable", "empty", "not_utf8"])
def test_an_unusable_file_is_a_startup_error_naming_the_variable(tmp_path: Path, problem: str) -> None:
    path = tmp_path / "kek"
    expected = {
        "missing": "not found",
        "directory": "is a directory",
        "unreadable": "not readable (permission denied)",
        "empty": "is empty",
        "not_utf8": "not valid UTF-8",
    }[problem]
    if problem == "directory":
        path.mkdir()
    elif problem == "unreadable":
        if os.geteuid() == 0:
            pytest.skip("root reads any file")
        path.write_text("secret-content-never-shown")
        path.chmod(0)
    elif problem == "empty":
        path.write_text("\n")
    elif problem == "not_utf8":
        path.write_bytes(b"\xff\xfe secret")
    message = error_of({"IDP_SECRETS__KEY_ENCRYPTION_KEY_FILE": str(path)})
    assert message.startswith("IDP_SECRETS__KEY_ENCRYPTION_KEY_FILE: ")
    assert expected in message
    assert "secret-content-never-shown" not in message


def test_an_invalid_secret_from_a_file_is_reported_without_its_content(tmp_path: Path) -> None:
    env = {"IDP_SECRETS__COOKIE_SECRET_FILE": write_secret(tmp_path, "cookie", "too-short-secret\n")}
    message = error_of(env)
    assert message.startswith("secrets.cookie_secret: must be at least 32 characters")
    assert "[from IDP_SECRETS__COOKIE_SECRET_FILE]" in message
    assert "too-short-secret" not in message
    # a URL with a password is a secret too: the bad value is not echoed
    env = {"IDP_DATABASE_URL_FILE": write_secret(tmp_path, "db", "mysql://idp:hunter22@db/idp")}
    message = error_of(env)
    assert message.startswith("database_url: must start with") and "hunter22" not in message


def test_only_secret_settings_take_a_file(tmp_path: Path) -> None:
    message = error_of({"IDP_ISSUER_FILE": write_secret(tmp_path, "issuer", "https://id.example")})
    assert message == "IDP_ISSUER_FILE: issuer is not a secret setting that can be read from a file"


def test_metrics_beyond_loopback_need_a_token_outside_dev_mode(tmp_path: Path, secret_values: dict[str, str]) -> None:
    env = {
        "IDP_SECRETS__COOKIE_SECRET": secret_values["cookie_secret"],
        "IDP_SECRETS__KEY_ENCRYPTION_KEY": secret_values["key_encryption_key"],
        "IDP_SERVER__HOST": "0.0.0.0",
    }
    message = error_of(env)
    assert message.startswith("metrics.bearer_token: required outside dev mode when server.host (0.0.0.0)")
    assert load_settings(environ={**env, "IDP_METRICS__ENABLED": "false"}).metrics.enabled is False
    with_token = load_settings(environ={**env, "IDP_METRICS__BEARER_TOKEN": "t" * 32})
    assert with_token.metrics.bearer_token is not None
    # loopback: no token needed (only local callers are answered)
    assert load_settings(environ={**env, "IDP_SERVER__HOST": "127.0.0.1"}).metrics.bearer_token is None
    # dev mode: no refusal
    assert load_settings(environ={"IDP_SERVER__HOST": "0.0.0.0", "IDP_DEV_MODE": "true", "IDP_DATA_DIR": str(tmp_path)})
    short = error_of({**env, "IDP_METRICS__BEARER_TOKEN": "short-but-secret"})
    assert short.startswith("metrics.bearer_token: must be at least 32 characters") and "short-but-secret" not in short
