"""Token status lists: a disabled agent's token stops working at a
verifier that checks them within the list's ttl (here 1 s)."""

from __future__ import annotations

import time

import pytest

from agentauth import InvalidToken, JwksCache, ResourceVerifier, StatusLists, StatusListUnavailable

from conftest import make_agent, start_server


@pytest.fixture(scope="module")
def ttl_server():
    yield from start_server(["--status-list-ttl", "1"])


def test_disabled_agent_is_refused_within_the_ttl(ttl_server):
    server = ttl_server
    agent = make_agent(server, "doomed")
    token = agent.client_credentials(resource=server.resource, scope="tools:read")["access_token"]
    v = ResourceVerifier(server.issuer, server.resource, check_status=True)
    call = lambda: v.verify("POST", server.resource, f"DPoP {token}",  # noqa: E731
                            agent.key.dpop_proof("POST", server.resource, token))
    assert call().kind == "access"
    assert v.status is not None and v.status.fetches == 1
    unchecked = ResourceVerifier(server.issuer, server.resource)
    server.cli("agent", "disable", agent.client_id)
    deadline = time.time() + 10
    while True:
        try:
            call()
        except InvalidToken as e:
            assert "revoked" in str(e)
            break
        assert time.time() < deadline, "still accepted 10 s after the kill"
        time.sleep(0.3)
    # A verifier that does not check status lists accepts it until exp.
    assert unchecked.verify("POST", server.resource, f"DPoP {token}",
                            agent.key.dpop_proof("POST", server.resource, token)).kind == "access"


def test_unverifiable_list_is_503_not_accepted(ttl_server):
    server = ttl_server
    token = server.bearer()["access_token"]
    keys = JwksCache(server.issuer + "/jwks.json")
    # The list cannot be verified (no key for it): refuse with 503, never accept.
    v = ResourceVerifier(server.issuer, server.resource, keys=keys,
                         check_status=StatusLists(server.issuer, JwksCache.from_document({"keys": []})))
    with pytest.raises(StatusListUnavailable) as e:
        v.verify("POST", server.resource, f"Bearer {token}")
    status, headers = e.value.challenge()
    assert status == 503 and headers[0][0] == "Retry-After"
