"""The deployment files, checked where Docker is not at hand: compose.yaml's services and secrets,
the Dockerfile's user, health check and stages, nginx's config (``nginx -t``), the systemd unit
(``systemd-analyze verify``). With Docker, docs/deployment.md says how to build and run them."""

from __future__ import annotations

import configparser
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from idp.config import file_settings

ROOT = Path(__file__).resolve().parents[2]
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def test_compose_has_the_documented_services(compose: dict) -> None:
    services = compose["services"]
    assert set(services) == {"postgres", "redis", "migrate", "idp1", "idp2", "nginx"}
    # Redis persists as the docs recommend
    command = services["redis"]["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    # migrations are one job that must finish before any node starts
    assert services["migrate"]["command"] == ["idp", "db", "upgrade"]
    assert services["migrate"]["restart"] == "no"
    for node in ("idp1", "idp2"):
        assert services[node]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert services["nginx"]["depends_on"]["idp1"]["condition"] == "service_healthy"
    assert services["nginx"]["volumes"] == ["./deploy/nginx/idp.conf:/etc/nginx/nginx.conf:ro"]


def test_compose_passes_every_secret_as_a_file(compose: dict) -> None:
    secret_paths = file_settings()
    for name in ("migrate", "idp1", "idp2"):
        service = compose["services"][name]
        env = service["environment"]
        for key, value in env.items():
            assert key.startswith("IDP_"), key
            path = tuple(part.lower() for part in key[len("IDP_") :].removesuffix("_FILE").split("__"))
            # a secret is never given in the clear, only as a file (a URL without a password is none)
            if path in secret_paths and not key.endswith("_FILE"):
                assert path in {("database_url",), ("redis_url",)} and "@" not in value, key
            if key.endswith("_FILE"):
                assert path in secret_paths, key
                secret = value.removeprefix("/run/secrets/")
                assert secret in service["secrets"] and secret in compose["secrets"], key
        for required in ("IDP_SECRETS__COOKIE_SECRET_FILE", "IDP_SECRETS__KEY_ENCRYPTION_KEY_FILE"):
            assert required in env
        # the nodes trust forwarded headers from nginx's fixed address alone
        assert env["IDP_SERVER__FORWARDED_ALLOW_IPS"] == '["172.28.0.10"]'
    assert compose["services"]["nginx"]["networks"]["default"]["ipv4_address"] == "172.28.0.10"
    assert compose["services"]["postgres"]["environment"]["POSTGRES_PASSWORD_FILE"] == "/run/secrets/postgres_password"
    for secret in compose["secrets"].values():
        assert secret["file"].startswith("./deploy/secrets/")
    # generated, never committed
    assert (ROOT / "deploy/secrets/.gitignore").read_text().splitlines()[-2:] == ["*", "!.gitignore"]
    assert (ROOT / "deploy/make-secrets.sh").stat().st_mode & stat.S_IXUSR


def test_the_dockerfile_runs_idp_as_a_non_root_user_with_a_health_check() -> None:
    text = (ROOT / "Dockerfile").read_text()
    stages = re.findall(r"^FROM (\S+)", text, re.M)
    assert stages == ["python:3.11-slim", "python:3.11-slim"]
    final = text[text.rindex("\nFROM ") :]
    users = re.findall(r"^USER (\S+)", final, re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert "tzdata" in final
    # compilers stay in the build stage
    assert "build-essential" in text[: text.rindex("\nFROM ")] and "build-essential" not in final
    assert re.search(r"^HEALTHCHECK .*\n?.*/healthz", final, re.M)
    assert re.search(r'^CMD \["idp", "serve"\]$', final, re.M)
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert {".git", ".venv", "tests", "deploy", "var"} <= set(ignored)  # deploy/secrets never in a layer


def test_the_dockerfile_health_check_is_valid_python() -> None:
    final = (ROOT / "Dockerfile").read_text().split("HEALTHCHECK", 1)[1]
    command = re.search(r'CMD \["python", "-c", "(.*)"\]', final)
    assert command is not None
    compile(command.group(1), "HEALTHCHECK", "exec")


@pytest.mark.skipif(NGINX is None, reason="nginx is not installed")
def test_the_nginx_config_passes_nginx_t(tmp_path: Path) -> None:
    text = (ROOT / "deploy/nginx/idp.conf").read_text()
    assert "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;" in text
    assert "proxy_set_header X-Forwarded-Proto $scheme;" in text
    assert "proxy_set_header Host $http_host;" in text
    # compose's service names do not resolve here: the one substitution made before checking
    local = text.replace("idp1:8000", "127.0.0.1:8000").replace("idp2:8000", "127.0.0.1:8001")
    (tmp_path / "logs").mkdir()
    config = tmp_path / "nginx.conf"
    config.write_text(local)
    assert NGINX is not None
    done = subprocess.run([NGINX, "-t", "-p", str(tmp_path), "-c", str(config), "-e", "stderr"], capture_output=True)
    assert done.returncode == 0, done.stderr.decode()
    assert "test is successful" in done.stderr.decode()


def test_the_systemd_unit_is_hardened_and_verifies(tmp_path: Path) -> None:
    text = (ROOT / "deploy/idp.service").read_text()
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string(text)
    service = unit["Service"]
    assert service["ExecStart"] == "/opt/idp/bin/idp serve"
    for key, expected in {
        "DynamicUser": "yes",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "CapabilityBoundingSet": "",
    }.items():
        assert service[key] == expected, key
    assert "IDP_SECRETS__KEY_ENCRYPTION_KEY_FILE=%d/key_encryption_key" in text
    assert unit["Install"]["WantedBy"] == "multi-user.target"
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (the unit parsed)")
    # verify wants ExecStart to exist: point it at this checkout's idp
    local = tmp_path / "idp.service"
    local.write_text(text.replace("/opt/idp/bin/idp", str(Path(sys.executable).with_name("idp"))))
    done = subprocess.run([analyze, "verify", str(local)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "idp.service" not in done.stderr, done.stderr  # no warning about this unit
