"""The verifier and the agent against servers started with other options:
`--signing-alg ES256` / `EdDSA` (the key's algorithm comes from the JWKS),
and `--dpop-nonce` (the agent retries with the server's nonce)."""

from __future__ import annotations

import jwt
import pytest

from agentauth import ResourceVerifier

from conftest import make_agent, start_server


@pytest.fixture(scope="module", params=["ES256", "EdDSA"])
def alg_server(request):
    yield from start_server(["--signing-alg", request.param, "--dpop-nonce"])


def test_signing_alg_and_dpop_nonces(alg_server):
    server = alg_server
    alg = next(a for a in ("ES256", "EdDSA") if a in server.process.args)
    agent = make_agent(server)
    # The token endpoint requires a nonce: the first proof is refused, the
    # agent retries with the one the server sent.
    token = agent.client_credentials(resource=server.resource, scope="tools:read")
    assert agent.nonces, "the server handed out a DPoP nonce"
    assert jwt.get_unverified_header(token["access_token"])["alg"] == alg
    v = ResourceVerifier(server.issuer, server.resource)
    got = v.verify("POST", server.resource, f"DPoP {token['access_token']}",
                   agent.key.dpop_proof("POST", server.resource, token["access_token"]))
    assert got.dpop_jkt == agent.key.jkt and v.keys.cached(jwt.get_unverified_header(token["access_token"])["kid"]).alg == alg
    bearer = server.bearer()["access_token"]
    assert v.verify("GET", server.resource, f"Bearer {bearer}").kind == "access"
