"""Per-call approval: a FastMCP tool that needs its owner's approval; the
agent is refused with the JSON-RPC error -31403 naming the approval, asks
its owner by CIBA, the owner approves on her approvals page (with her
password), and the DPoP-bound token makes that one call, once."""

from __future__ import annotations

import asyncio
import json
import threading

import pytest
from fastmcp import FastMCP

from agentauth import ResourceVerifier
from agentauth.approvals import APPROVAL_REQUIRED, covers
from agentauth.mcp import AgentAuthProvider

from consent import approve_backchannel
from mcp_helpers import Served

HDRS = {"accept": "application/json, text/event-stream"}


def call(i, name, args):
    return {"jsonrpc": "2.0", "id": i, "method": "tools/call", "params": {"name": name, "arguments": args}}


@pytest.fixture(scope="module")
def notes_server(server):
    deleted: list[str] = []
    verifier = ResourceVerifier(server.issuer, server.resource)
    mcp = FastMCP("notes", auth=AgentAuthProvider(verifier, required_scopes=["tools:read"],
                                                   approval_tools=["delete_note"]))

    @mcp.tool
    def delete_note(id: str) -> str:
        deleted.append(id)
        return f"deleted {id}"

    @mcp.tool
    def whoami() -> str:
        return "someone"

    with Served(mcp.http_app(path="/mcp", stateless_http=True, json_response=True), server.mcp_port):
        yield deleted


def test_canonical_arguments():
    claims = {"authorization_details": [{"type": "mcp_tool_call", "locations": ["r"], "tool": "pay",
                                         "arguments": {"to": "bob", "amount": 1.0, "memo": {"b": 2, "a": 1}}}]}
    assert covers(claims, "r", "pay", {"memo": {"a": 1, "b": 2}, "amount": 1, "to": "bob"})
    assert not covers(claims, "r", "pay", {"to": "bob", "amount": 2})
    assert not covers(claims, "other", "pay", {"memo": {"a": 1, "b": 2}, "amount": 1, "to": "bob"})
    assert not covers(claims, "r", "refund", {"memo": {"a": 1, "b": 2}, "amount": 1, "to": "bob"})


def test_approve_one_call(server, agent, notes_server):
    url = server.resource
    ordinary = agent.client_credentials(resource=url, scope="tools:read")
    # Refused with the approval to ask for, and nothing deleted.
    r = agent.request("POST", url, ordinary, json=call(1, "delete_note", {"id": "n2"}), headers=HDRS)
    assert r.status_code == 200
    error = r.json()["error"]
    assert error["code"] == APPROVAL_REQUIRED and notes_server == []
    details = error["data"]["authorization_details"]
    assert details == [{"type": "mcp_tool_call", "locations": [url], "tool": "delete_note", "arguments": {"id": "n2"}}]
    # Ordinary calls of other tools pass.
    assert agent.request("POST", url, ordinary, json=call(2, "whoami", {}), headers=HDRS).status_code == 200

    started = agent.ask_owner(login_hint="alice", authorization_details=details, binding_message="Delete n2 (py)")
    owner = threading.Thread(target=lambda: asyncio.run(
        approve_backchannel(server.issuer, "alice", "correct horse battery staple", "Delete n2 (py)")))
    owner.start()
    approval = agent.wait_for_approval(started, timeout=60)
    owner.join(30)
    assert approval["token_type"] == "DPoP"

    # tools/list passes without spending it; another tool, or other
    # arguments, are outside the approval (403, no scope to step up to).
    listed = agent.request("POST", url, approval, json={"jsonrpc": "2.0", "id": 3, "method": "tools/list"}, headers=HDRS)
    assert listed.status_code == 200, listed.text
    other = agent.request("POST", url, approval, json=call(4, "whoami", {}), headers=HDRS)
    assert other.status_code == 403 and "scope=" not in other.headers["www-authenticate"]
    wrong = agent.request("POST", url, approval, json=call(5, "delete_note", {"id": "n3"}), headers=HDRS)
    assert wrong.status_code == 403 and notes_server == []
    # A bearer use of the bound approval token is refused.
    bare = agent.http.post(url, json=call(6, "delete_note", {"id": "n2"}),
                           headers=dict(HDRS, authorization=f"Bearer {approval['access_token']}"))
    assert bare.status_code == 401
    # The call, once.
    done = agent.request("POST", url, approval, json=call(7, "delete_note", {"id": "n2"}), headers=HDRS)
    assert done.status_code == 200 and json.dumps(done.json()["result"]).count("deleted n2") >= 1, done.text
    again = agent.request("POST", url, approval, json=call(8, "delete_note", {"id": "n2"}), headers=HDRS)
    assert again.status_code == 401 and "already used" in again.headers["www-authenticate"]
    assert notes_server == ["n2"]


@pytest.mark.anyio
async def test_scopeless_approval_token_passes_fastmcps_scope_check(server):
    """An approval token with no scope, let through by the middleware, is
    reported to FastMCP with the server-wide scopes; the same token seen
    without the middleware is not."""
    from types import MappingProxyType

    from agentauth import Verified
    from agentauth.mcp import _verified

    provider = AgentAuthProvider(ResourceVerifier(server.issuer, server.resource), required_scopes=["tools:read"])
    claims = MappingProxyType({"sub": "alice", "client_id": "agent-x", "exp": 2_000_000_000, "jti": "j",
                               "cnf": {"jkt": "k"}, "authorization_details": [
                                   {"type": "mcp_tool_call", "tool": "delete_note", "arguments": {"id": "n1"}}]})
    seen = Verified(claims=claims, kind="access", token="t.o.k", scopes=(), dpop_jkt="k")
    reset = _verified.set(seen)
    try:
        assert (await provider.verify_token("t.o.k")).scopes == ["tools:read"]
    finally:
        _verified.reset(reset)
    assert await provider.verify_token("t.o.k") is None
