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


@pytest.fixture(scope="module")
def rotating_server():
    yield from start_server(["--key-reload-interval", "1"])


def test_key_rotation_refetches_the_jwks_on_the_new_kid(rotating_server):
    import time

    from agentauth import JwksCache

    server = rotating_server
    keys = JwksCache(server.issuer + "/jwks.json", min_refresh_interval=1)
    v = ResourceVerifier(server.issuer, server.resource, keys=keys)
    old = server.bearer()["access_token"]
    old_kid = jwt.get_unverified_header(old)["kid"]
    assert v.verify("POST", server.resource, f"Bearer {old}").kind == "access"
    assert keys.fetches == 1
    # A key rotated in the same second as the current key's activation ties
    # on `activates_at`, and the server may then keep signing with the old
    # key and list the new one as retired (seen 1 run in 6 with the
    # 0.1.0 binary; reported, not worked around in the server): rotate in a
    # later second.
    time.sleep(1.1)
    server.cli("keys", "rotate", "--publish-delay", "0")
    deadline = time.time() + 15
    while True:
        new = server.bearer()["access_token"]
        if jwt.get_unverified_header(new)["kid"] != old_kid:
            break
        assert time.time() < deadline, "the server did not start signing with the new key"
        time.sleep(0.5)
    time.sleep(1.1)  # past the minimum refresh interval since the first fetch
    assert v.verify("POST", server.resource, f"Bearer {new}").kind == "access"
    assert keys.fetches == 2, "one refetch, on the unknown kid"
    assert v.verify("POST", server.resource, f"Bearer {old}").kind == "access", "the old key is still published"
