"""FastMCP with AgentAuthProvider, other options: the resource's own DPoP
nonces, and passports accepted with a scope policy."""

from __future__ import annotations

import json

import httpx

from mcp_helpers import Served
from test_fastmcp import make_app


def test_resource_nonces_and_passport_policy(server, agent):
    """A FastMCP server with its own DPoP nonces (RFC 9449 §9) that takes
    passports of alice's agents, with the scope its policy grants."""
    import secrets

    from agentauth import NonceKey

    app = make_app(server, nonces=NonceKey(secrets.token_bytes(32)), accept_passports=True,
                   passport_scopes=lambda p: ["tools:read"] if p["agent_name"] == "py-agent" else [])
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "whoami", "arguments": {}}}
    hdrs = {"accept": "application/json, text/event-stream"}
    with Served(app, server.mcp_port):
        token = agent.client_credentials(resource=server.resource, scope="tools:read")
        first = httpx.post(server.resource, json=body, headers=dict(hdrs, authorization=f"DPoP {token['access_token']}",
                           dpop=agent.key.dpop_proof("POST", server.resource, token["access_token"])))
        assert first.status_code == 401 and 'error="use_dpop_nonce"' in first.headers["www-authenticate"]
        assert first.headers["dpop-nonce"]
        agent.nonces.pop(server.resource, None)
        r = agent.request("POST", server.resource, token, json=body, headers=hdrs)  # retries with the nonce
        assert r.status_code == 200, r.text
        passport = agent.passport(audience=server.resource)
        r = agent.request("POST", server.resource, dict(passport, token_type="DPoP"), json=body, headers=hdrs)
        assert r.status_code == 200, r.text
        me = json.loads(r.json()["result"]["content"][0]["text"])
        assert me["sub"] == agent.client_id and me["scopes"] == ["tools:read"]


def test_tool_scopes(server):
    app = make_app(server, tool_scopes={"admin_echo": ["tools:admin"]})
    call = lambda i, name, args: {"jsonrpc": "2.0", "id": i, "method": "tools/call",  # noqa: E731
                                  "params": {"name": name, "arguments": args}}
    hdrs = {"accept": "application/json, text/event-stream"}
    read = server.bearer("tools:read")["access_token"]
    both = server.bearer("tools:read tools:admin")["access_token"]
    with Served(app, server.mcp_port):
        post = lambda token, body: httpx.post(server.resource, json=body,  # noqa: E731
                                              headers=dict(hdrs, authorization=f"Bearer {token}"))
        assert post(read, call(1, "whoami", {})).status_code == 200
        r = post(read, call(2, "admin_echo", {"text": "x"}))
        assert r.status_code == 403 and 'scope="tools:read tools:admin"' in r.headers["www-authenticate"]
        # In a batch too.
        r = post(read, [call(3, "whoami", {}), call(4, "admin_echo", {"text": "x"})])
        assert r.status_code == 403
        r = post(both, call(5, "admin_echo", {"text": "x"}))
        assert r.status_code == 200 and "tools:admin" in r.text
