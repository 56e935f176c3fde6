"""Starts the real agentauth binary (AGENTAUTH_BIN, default
../../target/debug/agentauth) on a free loopback port with a fresh SQLite
database, as conformance/lib/server.mjs does."""

from __future__ import annotations

import base64
import json
import os
import secrets
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

HERE = Path(__file__).resolve().parent
BIN = os.environ.get("AGENTAUTH_BIN", str((HERE / "../../../target/debug/agentauth").resolve()))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    issuer: str
    dir: Path
    env: dict[str, str]
    database: str
    mcp_port: int
    resource: str
    other_resource: str
    process: subprocess.Popen[bytes] | None = None
    cache: dict[str, Any] = field(default_factory=dict)

    def cli(self, *args: str, env: dict[str, str] | None = None) -> str:
        out = subprocess.run([BIN, *args, "--database-url", self.database], env={**self.env, **(env or {})},
                             capture_output=True, text=True, timeout=60)
        if out.returncode != 0:
            raise RuntimeError(f"agentauth {' '.join(args)} exited {out.returncode}: {out.stderr}")
        return out.stdout.strip()

    def client(self, name: str, scope: str) -> dict[str, Any]:
        """A client_credentials client made by the operator."""
        return json.loads(self.cli("client", "create", "--name", name, "--grant-type", "client_credentials",
                                   "--scope", scope, "--json"))

    def bearer(self, scope: str = "tools:read", resource: str | None = None, dpop_proof: str | None = None) -> dict[str, Any]:
        if "cc" not in self.cache:
            self.cache["cc"] = self.client("verifier-tests", "tools:read tools:admin")
        c = self.cache["cc"]
        headers = {"DPoP": dpop_proof} if dpop_proof else {}
        r = httpx.post(self.issuer + "/token", auth=(c["client_id"], c["client_secret"]), headers=headers,
                       data={"grant_type": "client_credentials", "scope": scope, "resource": resource or self.resource})
        assert r.status_code == 200, r.text
        return r.json()


@pytest.fixture(scope="session")
def server() -> Any:
    yield from start_server(os.environ.get("AGENTAUTH_TEST_ARGS", "").split())


def start_server(extra_args: list[str]) -> Any:
    """A generator: yields a running Server, stops it when resumed."""
    port, mcp_port = free_port(), free_port()
    issuer = f"http://127.0.0.1:{port}"
    d = Path(tempfile.mkdtemp(prefix="agentauth-py-"))
    database = f"sqlite://{d}/agentauth.db?mode=rwc"
    env = {**os.environ, "AGENTAUTH_KEK": base64.b64encode(secrets.token_bytes(32)).decode(), "RUST_LOG": "warn"}
    resource = f"http://127.0.0.1:{mcp_port}/mcp"
    other = "https://other.example.com/mcp"
    (d / "resources.toml").write_text(f"""
client_credentials = ["operator", "initial_token", "agent"]

[[resource]]
uri = "{resource}"
name = "Python test MCP server"
scopes = ["tools:read", "tools:admin"]
accept_passports = true

[[resource.authorization_details]]
type = "mcp_tool_call"
description = "One call of one tool"
render = "Call the tool {{tool}} with {{arguments}}"
fields.tool = {{ kind = "string", required = true, max_length = 128 }}
fields.arguments = {{ kind = "object" }}

[[resource]]
uri = "{other}"
name = "Another resource"
scopes = ["tools:read", "tools:admin"]
""")
    srv = Server(issuer=issuer, dir=d, env=env, database=database, mcp_port=mcp_port, resource=resource,
                 other_resource=other)
    srv.cli("user", "create", "alice", env={"AGENTAUTH_PASSWORD": "correct horse battery staple"})
    log = open(d / "server.log", "wb")
    srv.process = subprocess.Popen(
        [BIN, "serve", "--listen", f"127.0.0.1:{port}", "--issuer", issuer, "--database-url", database,
         "--resources-file", str(d / "resources.toml"), *extra_args],
        env=env, stdout=subprocess.DEVNULL, stderr=log)
    deadline = time.time() + 30
    while True:
        if srv.process.poll() is not None:
            raise RuntimeError(f"agentauth exited: {(d / 'server.log').read_text()}")
        try:
            if httpx.get(issuer + "/healthz").status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.time() > deadline:
            srv.process.kill()
            raise RuntimeError("agentauth did not become healthy in 30 s")
        time.sleep(0.1)
    yield srv
    srv.process.terminate()
    try:
        srv.process.wait(5)
    except subprocess.TimeoutExpired:
        srv.process.kill()
    log.close()


@pytest.fixture(scope="session")
def agent(server: Server) -> Any:
    """An agent of alice's (kind `agent`, made by the operator) with a P-256 key."""
    return make_agent(server)


def make_agent(server: Server, name: str = "py-agent", key: Any = None) -> Any:
    from agentauth.agent import Agent, AgentKey

    key = key or AgentKey()
    jwk_file = server.dir / f"{name}.jwk"
    jwk_file.write_text(json.dumps(key.public_jwk))
    out = server.cli("agent", "create", "--owner", "alice", "--name", name, "--scope", "tools:read",
                     "--jwk", str(jwk_file))
    agent_id = out.split()[-1] if not out.startswith("{") else json.loads(out)["agent_id"]
    return Agent(server.issuer, agent_id, key)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
