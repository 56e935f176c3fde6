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
