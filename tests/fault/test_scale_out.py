"""Scale-out behind a real load balancer (issue 15): nginx in front of three `idp serve` nodes that
share PostgreSQL (IDP_TEST_DATABASE_URL) and Redis (IDP_TEST_REDIS_URL with this test's key
prefix, or a private redis-server).

nginx connects to the nodes from 127.0.0.2 (proxy_bind), the only address the nodes trust for
X-Forwarded-For; the test's clients connect from 127.0.0.1 and 127.0.0.3. A header, X-Idp-Node,
pins a request to one node (an nginx map to one-server upstreams), and nginx names the node that
answered in X-Idp-Upstream, so "every request on a different node" is checked, not assumed.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.conftest import TEST_REDIS_URL
from tests.e2e.server import IDP, Server, free_port, run_idp, running
from tests.e2e.test_two_instances import (
    APP_ORIGIN,
    EMAIL,
    PASSWORD,
    REDIRECT,
    Cluster,
    authorization_code,
    redeem,
    refresh,
    sign_in,
)

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
BALANCER_ADDRESS = "127.0.0.2"  # nginx's side of every upstream connection
CLIENT_ADDRESS = "127.0.0.3"  # a caller that is neither the test's default address nor nginx's
FORGED = "198.51.100.77"  # what a caller claims in X-Forwarded-For
# [keys] reload_interval of the nodes: the periodic reload is kept out of the way, so a rotation
# reaching every node within ANNOUNCED seconds came through the key-value announcement (pub/sub).
RELOAD_INTERVAL = 3600
ANNOUNCED = 3.0
NODES = 3
TEMP_PATHS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")  # nginx's, inside the test's prefix


@dataclass
class Farm:
    balancer: str  # nginx's base URL, also the issuer
    nodes: list[str]  # each node's own base URL
    servers: list[Server]
    env: dict[str, str]
    client_id: str
    client_secret: str
    ports: list[int] = field(default_factory=list)

    @property
    def cluster(self) -> Cluster:
        """The two-instance helpers' view: every request goes to the balancer."""
        return Cluster(self.balancer, self.balancer, self.client_id, self.client_secret)


def nginx_config(prefix: Path, port: int, node_ports: list[int]) -> str:
    servers = "\n".join(f"    server 127.0.0.1:{p} max_fails=1 fail_timeout=30s;" for p in node_ports)
    pinned = "\n".join(f"  upstream node{n} {{ server 127.0.0.1:{p}; }}" for n, p in enumerate(node_ports))
    choices = "\n".join(f"    {n} node{n};" for n in range(len(node_ports)))
    user = "user root;\n" if os.geteuid() == 0 else ""
    temp = " ".join(f"{kind}_temp_path {prefix}/{kind};" for kind in TEMP_PATHS)
    return f"""{user}worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 512; }}
http {{
  access_log off;
  {temp}
  upstream pool {{
{servers}
    keepalive 16;
  }}
{pinned}
  map $http_x_idp_node $idp_upstream {{
    default pool;
{choices}
  }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://$idp_upstream;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $http_host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Forwarded-Host $http_host;
      proxy_bind {BALANCER_ADDRESS};
      # nginx's default, spelled out: an idempotent request whose node failed is tried on the
      # next; a POST already sent is not (non_idempotent is not listed).
      proxy_next_upstream error timeout;
      proxy_connect_timeout 2s;
      add_header X-Idp-Upstream $upstream_addr always;
    }}
  }}
}}
"""


@contextmanager
def running_nginx(prefix: Path, port: int, node_ports: list[int]) -> Iterator[None]:
    for kind in TEMP_PATHS:
        (prefix / kind).mkdir(parents=True, exist_ok=True)
    config = prefix / "nginx.conf"
    config.write_text(nginx_config(prefix, port, node_ports))
    checked = subprocess.run([NGINX, "-t", "-p", str(prefix), "-c", str(config), "-e", "stderr"], capture_output=True)
    assert checked.returncode == 0, checked.stderr.decode()
    process = subprocess.Popen(
        [NGINX, "-p", str(prefix), "-c", str(config), "-e", "stderr"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            assert process.poll() is None, (prefix / "error.log").read_text(errors="replace")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "nginx did not start"
            time.sleep(0.1)
        yield
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def redis_for_the_farm() -> Iterator[str]:
    """CI's Redis (the test's own key prefix keeps it apart), or a private one on a free port."""
    if TEST_REDIS_URL:
        yield TEST_REDIS_URL
        return
    if shutil.which("redis-server") is None:
        pytest.skip("the nodes share Redis: set IDP_TEST_REDIS_URL or install redis-server")
    port = free_port()
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True).stdout.strip() != b"PONG":
            assert time.monotonic() < deadline, "private redis-server did not start"
            time.sleep(0.1)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
def farm(cli_env: dict[str, str], tmp_path: Path) -> Iterator[Farm]:
    if not os.environ.get("IDP_TEST_DATABASE_URL"):
        pytest.skip("the nodes share PostgreSQL: set IDP_TEST_DATABASE_URL (the fault stage does)")
    balancer_port = free_port()
    node_ports = [free_port() for _ in range(NODES)]
    balancer = f"http://127.0.0.1:{balancer_port}"
    with ExitStack() as stack:
        redis_url = stack.enter_context(redis_for_the_farm())
        env = {
            **cli_env,
            "IDP_ISSUER": balancer,
            "IDP_REDIS_URL": redis_url,
            "IDP_SERVER__WORKERS": "1",
            "IDP_SERVER__FORWARDED_ALLOW_IPS": json.dumps([BALANCER_ADDRESS]),
            "IDP_KEYS__RELOAD_INTERVAL": str(RELOAD_INTERVAL),
        }
        run_idp(env, "db", "upgrade")
        run_idp(env, "users", "create", "--email", EMAIL, "--password-stdin", "--verified", stdin=PASSWORD + "\n")
        created = json.loads(
            run_idp(
                env, "clients", "create", "--name", "Scale-out RP", "--confidential", "--first-party",
                "--redirect-uri", REDIRECT, "--web-origin", APP_ORIGIN,
                "--grant", "authorization_code", "--grant", "refresh_token", "--json",
            )
        )  # fmt: skip
        servers = [
            stack.enter_context(running([IDP, "serve"], {**env, "IDP_SERVER__PORT": str(port)}, port))
            for port in node_ports
        ]
        stack.enter_context(running_nginx(tmp_path / "nginx", balancer_port, node_ports))
        yield Farm(
            balancer,
            [f"http://127.0.0.1:{port}" for port in node_ports],
            servers,
            env,
            created["client_id"],
            created["client_secret"],
            node_ports,
        )
    for server in servers:
        if server.returncode not in (-signal.SIGKILL,):
            assert "Traceback" not in server.output(), server.output()


class RoundRobin:
    """Pins each request to the next node through the balancer, and records who answered."""

    def __init__(self, farm: Farm, start: int = 0) -> None:
        self.farm = farm
        self.next = start
        self.answered: list[int] = []

    def pin(self, request: httpx.Request) -> None:
        request.headers["X-Idp-Node"] = str(self.next % NODES)
        self.next += 1

    def record(self, response: httpx.Response) -> None:
        upstream = response.headers.get("X-Idp-Upstream", "")
        self.answered.append(self.farm.ports.index(int(upstream.rsplit(":", 1)[1])))

    def client(self) -> httpx.Client:
        return httpx.Client(timeout=10, event_hooks={"request": [self.pin], "response": [self.record]})


def pinned(farm: Farm, node: int) -> dict[str, str]:
    return {"X-Idp-Node": str(node)}


def test_three_nodes_behind_nginx(farm: Farm) -> None:
    """One farm for every check (starting three nodes and nginx is most of the time): the node
    killed last."""
    started = time.monotonic()
    a_full_flow_with_every_request_on_another_node(farm)
    forwarded_headers_are_believed_only_from_the_balancer(farm)
    a_rotation_on_one_node_is_published_by_all(farm)
    killing_a_node_mid_traffic_fails_only_its_in_flight_requests(farm)
    assert time.monotonic() - started < 60


def a_full_flow_with_every_request_on_another_node(farm: Farm) -> None:
    cluster, lb, auth = farm.cluster, farm.balancer, (farm.client_id, farm.client_secret)
    browser_nodes, rp_nodes = RoundRobin(farm), RoundRobin(farm, start=1)
    with browser_nodes.client() as browser, rp_nodes.client() as rp:
        assert sign_in(browser, lb).status_code == 303  # GET /login on one node, POST on the next
        # the session made there works on every node
        with httpx.Client(timeout=10, cookies=browser.cookies) as same_browser:
            for node in range(NODES):
                assert same_browser.get(f"{lb}/account", headers=pinned(farm, node)).status_code == 200
        code, verifier = authorization_code(browser, cluster, lb)
        tokens = redeem(rp, cluster, lb, code, verifier)
        assert tokens.status_code == 200, tokens.text
        rotated = refresh(rp, cluster, lb, tokens.json()["refresh_token"])
        assert rotated.status_code == 200, rotated.text
        access_token, refresh_token = rotated.json()["access_token"], rotated.json()["refresh_token"]
        for _ in range(NODES):  # one introspection on each node (the round robin moves on)
            seen = rp.post(f"{lb}/introspect", data={"token": access_token}, auth=auth)
            assert seen.json()["active"] is True
        # revoked on one node: refused on all at once (no wait)
        assert rp.post(f"{lb}/revoke", data={"token": access_token}, auth=auth).status_code == 200
        for _ in range(NODES):
            assert rp.post(f"{lb}/introspect", data={"token": access_token}, auth=auth).json() == {"active": False}
        assert rp.post(f"{lb}/revoke", data={"token": refresh_token}, auth=auth).status_code == 200
        dead = refresh(rp, cluster, lb, refresh_token)
        assert dead.status_code == 400 and dead.json()["error"] == "invalid_grant"
    for answered in (browser_nodes.answered, rp_nodes.answered):
        # each request on a different node from the one before (the same node never twice running)
        assert all(a != b for a, b in itertools.pairwise(answered)), answered
        assert set(answered) == set(range(NODES))


def login_failures_from(farm: Farm) -> list[str | None]:
    out = run_idp(farm.env, "audit", "tail", "--json", "--event", "login_failed", "--lines", "50")
    return [json.loads(line)["ip"] for line in out.splitlines() if line.strip()]


def forwarded_headers_are_believed_only_from_the_balancer(farm: Farm) -> None:
    forged = {"X-Forwarded-For": FORGED}
    elsewhere = httpx.HTTPTransport(local_address=CLIENT_ADDRESS)
    with httpx.Client(timeout=10, transport=elsewhere, headers=forged) as caller:
        # straight to a node, claiming another address: not believed
        assert sign_in(caller, farm.nodes[0], password="not-the-password-0").status_code == 401
        # through the balancer with the same claim: nginx appends the real peer, and only that is
        # believed (the first address from the right that is not a trusted proxy)
        assert sign_in(caller, farm.balancer, password="not-the-password-1").status_code == 401
    with httpx.Client(timeout=10) as local:
        # through the balancer from 127.0.0.1: the node sees 127.0.0.1, not nginx's 127.0.0.2
        assert sign_in(local, farm.balancer, password="not-the-password-2").status_code == 401
    deadline = time.monotonic() + 10
    while len(ips := login_failures_from(farm)) < 3:
        assert time.monotonic() < deadline, ips
        time.sleep(0.3)
    assert sorted(ips) == sorted([CLIENT_ADDRESS, CLIENT_ADDRESS, "127.0.0.1"]), ips
    assert FORGED not in ips and BALANCER_ADDRESS not in ips


def a_rotation_on_one_node_is_published_by_all(farm: Farm) -> None:
    with httpx.Client(timeout=10) as http:
        before = {key["kid"] for key in http.get(f"{farm.nodes[0]}/jwks").json()["keys"]}
        created = json.loads(run_idp(farm.env, "keys", "rotate", "--json"))["created"]
        assert created and not set(created) & before
        started = time.monotonic()
        waiting = set(range(NODES))
        while waiting:
            for node in sorted(waiting):
                kids = {key["kid"] for key in http.get(f"{farm.nodes[node]}/jwks").json()["keys"]}
                if set(created) <= kids:
                    waiting.discard(node)
            assert time.monotonic() - started < ANNOUNCED, f"nodes {waiting} still publish the old set"
            time.sleep(0.2)
        for node in range(NODES):
            via_balancer = http.get(f"{farm.balancer}/jwks", headers=pinned(farm, node)).json()
            assert set(created) <= {key["kid"] for key in via_balancer["keys"]}


def killing_a_node_mid_traffic_fails_only_its_in_flight_requests(farm: Farm) -> None:
    auth = (farm.client_id, farm.client_secret)
    stop = threading.Event()
    lock = threading.Lock()
    tally: dict[str, list[int]] = {"GET": [0, 0], "POST": [0, 0]}  # [sent, failed]
    concurrency = 6

    def drive(worker: int) -> None:
        with httpx.Client(timeout=10) as http:
            n = 0
            while not stop.is_set():
                method = "GET" if (worker + n) % 2 else "POST"
                n += 1
                try:
                    if method == "GET":
                        response = http.get(f"{farm.balancer}/.well-known/openid-configuration")
                    else:
                        response = http.post(f"{farm.balancer}/introspect", data={"token": "x" * 40}, auth=auth)
                    failed = response.status_code >= 500
                except httpx.TransportError:
                    failed = True
                with lock:
                    tally[method][0] += 1
                    tally[method][1] += failed

    threads = [threading.Thread(target=drive, args=(n,)) for n in range(concurrency)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(1.5)
        farm.servers[2].process.send_signal(signal.SIGKILL)
        farm.servers[2].process.wait(timeout=10)
        time.sleep(1.5)
        with lock:
            after_kill = {method: list(counts) for method, counts in tally.items()}
        time.sleep(1.5)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=15)
    sent = tally["GET"][0] + tally["POST"][0]
    assert sent > 50, tally
    # GETs in flight on the dead node were retried on another (proxy_next_upstream): none failed.
    assert tally["GET"][1] == 0, tally
    # A POST already sent to it is not retried: at most those in flight when it died fail.
    assert tally["POST"][1] <= concurrency, tally
    # and once nginx has marked it down, nothing more fails
    assert tally["POST"][1] == after_kill["POST"][1], (after_kill, tally)
