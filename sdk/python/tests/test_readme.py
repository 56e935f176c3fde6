"""Runs every `# example: NAME` Python block of README.md against the
running server."""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path

import httpx
import httpx2
import pytest
from mcp.client import Client
from mcp.client.streamable_http import streamable_http_client

from agentauth.agent import AgentKey, DPoPAuth
from mcp_helpers import Served

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()
EXAMPLES = dict(
    (m.group(1), m.group(0)) for m in re.finditer(r"# example: (\S+)\n(.*?)(?=```)", README, re.S)
)


def run(name: str, **extra) -> dict:
    namespace = {"__name__": f"readme_{name}", **extra}
    exec(compile(EXAMPLES[name], f"README.md:{name}", "exec"), namespace)
    return namespace


def test_every_example_is_known():
    assert set(EXAMPLES) == {"fastmcp", "mcp-sdk", "resource", "agent", "site"}


@pytest.fixture
def env(server, monkeypatch):
    monkeypatch.setenv("AGENTAUTH_ISSUER", server.issuer)
    monkeypatch.setenv("MCP_RESOURCE", server.resource)
    monkeypatch.setenv("MCP_RESOURCE_METADATA", f"http://127.0.0.1:{server.mcp_port}/.well-known/oauth-protected-resource/mcp")
    return monkeypatch


@pytest.fixture
def readme_agent(server, env):
    key = AgentKey()
    key.save(str(server.dir / "readme-agent.pem"))
    (server.dir / "readme-agent.jwk").write_text(json.dumps(key.public_jwk))
    agent_id = server.cli("agent", "create", "--owner", "alice", "--name", "readme-agent", "--scope", "tools:read",
                          "--jwk", str(server.dir / "readme-agent.jwk")).split()[-1]
    env.setenv("AGENT_KEY", str(server.dir / "readme-agent.pem"))
    env.setenv("AGENT_ID", agent_id)
    return agent_id, key


async def whoami(url, auth, tool="whoami"):
    async with httpx2.AsyncClient(auth=auth) as http:
        async with Client(streamable_http_client(url, http_client=http)) as client:
            return (await client.call_tool(tool, {})).content[0].text


@pytest.mark.anyio
async def test_fastmcp_example(server, env, agent):
    app = run("fastmcp")["app"]
    token = agent.client_credentials(resource=server.resource, scope="tools:read")
    with Served(app, server.mcp_port):
        assert await whoami(server.resource, DPoPAuth(agent.key, token["access_token"])) == agent.client_id


@pytest.mark.anyio
async def test_mcp_sdk_example(server, env, agent):
    app = run("mcp-sdk")["app"]
    token = agent.client_credentials(resource=server.resource, scope="tools:read")
    with Served(app, server.mcp_port):
        assert await whoami(server.resource, DPoPAuth(agent.key, token["access_token"]), "hello") == "hello"
        assert httpx.post(server.resource, json={}).status_code == 401


def test_resource_example(server, env, agent):
    handle = run("resource")["handle"]
    status, headers = handle("POST", {})
    assert status == 401 and "resource_metadata=" in headers[0][1]
    token = agent.client_credentials(resource=server.resource, scope="tools:read")["access_token"]
    proof = agent.key.dpop_proof("POST", server.resource, token)
    assert handle("POST", {"authorization": f"DPoP {token}", "dpop": proof}) == (200, [("x-caller", agent.client_id)])
    assert handle("POST", {"authorization": f"DPoP {token}", "dpop": proof})[0] == 401  # replayed


def test_agent_and_site_examples(server, env, readme_agent):
    c = json.loads(server.cli("client", "create", "--name", "Readme Site", "--grant-type",
                              "urn:agentauth:params:grant-type:pow-login", "--json"))
    env.setenv("SITE_CLIENT_ID", c["client_id"])
    env.setenv("SITE_CLIENT_SECRET", c["client_secret"])
    printed: list[str] = []
    ids: list[str] = []

    def capture(*args):
        printed.append(" ".join(map(str, args)))
        if args and args[0] == "login request:":
            ids.append(args[1])

    site = threading.Thread(target=run, args=("site",), kwargs={"print": capture})
    site.start()
    for _ in range(100):
        if ids:
            break
        site.join(0.1)
    assert ids, printed
    env.setenv("LOGIN_REQUEST", ids[0])
    with Served(run("fastmcp")["app"], server.mcp_port):
        ns = run("agent")
    assert ns["reply"].status_code == 200, ns["reply"].text
    assert ns["token"]["token_type"] == "DPoP"
    site.join(30)
    assert printed[-1].startswith(f"logged in: agent {readme_agent[0]} (readme-agent) of owner "), printed
