"""The resource verifier against real tokens from the running server."""

from __future__ import annotations

import time

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from agentauth import (
    InsufficientScope,
    InvalidDpopProof,
    InvalidRequest,
    InvalidToken,
    JwksCache,
    MissingToken,
    ResourceVerifier,
)
from agentauth.agent import AgentKey


def verifier(server, **kw) -> ResourceVerifier:
    return ResourceVerifier(server.issuer, server.resource, **kw)


def test_bearer_token_is_accepted(server):
    v = verifier(server)
    t = server.bearer("tools:read")
    got = v.verify("POST", server.resource, f"Bearer {t['access_token']}")
    assert got.kind == "access" and got.scopes == ("tools:read",)
    assert got.claims["iss"] == server.issuer
    got.require_scopes(["tools:read"])
    with pytest.raises(InsufficientScope) as e:
        got.require_scopes(["tools:admin"])
    status, headers = e.value.challenge()
    assert status == 403 and 'scope="tools:read tools:admin"' in headers[0][1]


def test_dpop_bound_token_with_proof(server, agent):
    v = verifier(server)
    t = agent.client_credentials(resource=server.resource, scope="tools:read")
    assert t["token_type"] == "DPoP"
    at = t["access_token"]
    proof = agent.key.dpop_proof("POST", server.resource, at)
    got = v.verify("POST", server.resource, f"DPoP {at}", proof)
    assert got.dpop_jkt == agent.key.jkt and got.claims["agent_id"] == agent.client_id
    # §11.1: the same proof again is a replay.
    with pytest.raises(InvalidDpopProof, match="already used"):
        v.verify("POST", server.resource, f"DPoP {at}", proof)
    # A fresh proof works again.
    v.verify("POST", server.resource, f"DPoP {at}", agent.key.dpop_proof("POST", server.resource, at))


def test_dpop_negative_cases(server, agent):
    v = verifier(server)
    at = agent.client_credentials(resource=server.resource, scope="tools:read")["access_token"]
    url = server.resource
    # A bound token as a bearer token.
    with pytest.raises(InvalidToken, match="DPoP scheme"):
        v.verify("POST", url, f"Bearer {at}")
    # No proof, two proofs.
    with pytest.raises(InvalidDpopProof, match="exactly one"):
        v.verify("POST", url, f"DPoP {at}")
    with pytest.raises(InvalidDpopProof, match="exactly one"):
        v.verify("POST", url, f"DPoP {at}", [agent.key.dpop_proof("POST", url, at)] * 2)
    # Wrong method, wrong URL, no ath, another key.
    with pytest.raises(InvalidDpopProof, match="htm"):
        v.verify("POST", url, f"DPoP {at}", agent.key.dpop_proof("GET", url, at))
    with pytest.raises(InvalidDpopProof, match="htu"):
        v.verify("POST", url, f"DPoP {at}", agent.key.dpop_proof("POST", url + "/other", at))
    with pytest.raises(InvalidDpopProof, match="ath"):
        v.verify("POST", url, f"DPoP {at}", agent.key.dpop_proof("POST", url))
    with pytest.raises(InvalidDpopProof, match="not the key"):
        v.verify("POST", url, f"DPoP {at}", AgentKey().dpop_proof("POST", url, at))
    # An old proof (iat outside the window).
    old = jwt.encode({"jti": "x1", "htm": "POST", "htu": url, "iat": int(time.time()) - 600, "ath": __import__("agentauth").ath(at)},
                     agent.key.private_key, algorithm="ES256", headers={"typ": "dpop+jwt", "jwk": agent.key.public_jwk})
    with pytest.raises(InvalidDpopProof, match="iat"):
        v.verify("POST", url, f"DPoP {at}", old)
    # Wrong typ; a private key in the header; an HMAC proof.
    bad_typ = jwt.encode({"jti": "x2", "htm": "POST", "htu": url, "iat": int(time.time())}, agent.key.private_key,
                         algorithm="ES256", headers={"typ": "jwt", "jwk": agent.key.public_jwk})
    with pytest.raises(InvalidDpopProof, match="typ"):
        v.verify("POST", url, f"DPoP {at}", bad_typ)
    private = dict(agent.key.public_jwk, d="AAAA")
    with pytest.raises(InvalidDpopProof, match="private"):
        v.verify("POST", url, f"DPoP {at}", jwt.encode({"jti": "x3"}, agent.key.private_key, algorithm="ES256",
                                                       headers={"typ": "dpop+jwt", "jwk": private}))
    with pytest.raises(InvalidDpopProof, match="alg"):
        v.verify("POST", url, f"DPoP {at}", jwt.encode({"jti": "x4"}, "secret-secret-secret-secret-32b!", algorithm="HS256",
                                                       headers={"typ": "dpop+jwt", "jwk": agent.key.public_jwk}))
    # A bearer token under the DPoP scheme.
    bearer = server.bearer()["access_token"]
    with pytest.raises(InvalidToken, match="not DPoP-bound"):
        v.verify("POST", url, f"DPoP {bearer}", agent.key.dpop_proof("POST", url, bearer))


def test_require_dpop_refuses_bearer_tokens(server):
    v = verifier(server, require_dpop=True)
    with pytest.raises(InvalidToken, match="only DPoP-bound"):
        v.verify("POST", server.resource, f"Bearer {server.bearer()['access_token']}")


def test_expired_wrong_audience_wrong_issuer(server):
    at = server.bearer()["access_token"]
    auth = f"Bearer {at}"
    later = verifier(server, clock=lambda: time.time() + 3600)
    with pytest.raises(InvalidToken, match="expired"):
        later.verify("POST", server.resource, auth)
    with pytest.raises(InvalidToken, match="another resource"):
        ResourceVerifier(server.issuer, server.other_resource).verify("POST", server.other_resource, auth)
    other_aud = server.bearer(resource=server.other_resource)["access_token"]
    with pytest.raises(InvalidToken, match="another resource"):
        verifier(server).verify("POST", server.resource, f"Bearer {other_aud}")
    wrong_iss = ResourceVerifier("http://127.0.0.1:1", server.resource,
                                 keys=JwksCache(server.issuer + "/jwks.json"))
    with pytest.raises(InvalidToken, match="another issuer"):
        wrong_iss.verify("POST", server.resource, auth)


def test_foreign_key_and_unknown_kid(server):
    at = server.bearer()["access_token"]
    header = jwt.get_unverified_header(at)
    claims = jwt.decode(at, options={"verify_signature": False})
    foreign = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    keys = JwksCache(server.issuer + "/jwks.json")
    v = verifier(server, keys=keys)
    # Same kid, signed by another key.
    forged = jwt.encode(claims, foreign, algorithm="RS256", headers={"kid": header["kid"], "typ": "at+jwt"})
    with pytest.raises(InvalidToken):
        v.verify("POST", server.resource, f"Bearer {forged}")
    assert keys.fetches == 1
    # Unknown kids: one refetch at most per interval, however many come.
    for i in range(5):
        forged = jwt.encode(claims, foreign, algorithm="RS256", headers={"kid": f"nope-{i}", "typ": "at+jwt"})
        with pytest.raises(InvalidToken):
            v.verify("POST", server.resource, f"Bearer {forged}")
    assert keys.fetches == 1
    # Algorithm confusion: the token's alg is not the key's.
    confused = jwt.encode(claims, foreign, algorithm="PS256", headers={"kid": header["kid"], "typ": "at+jwt"})
    with pytest.raises(InvalidToken):
        v.verify("POST", server.resource, f"Bearer {confused}")
    # A string exp is refused even when signed right (here: by a cache
    # holding the foreign key as the issuer's).
    pub = jwt.algorithms.RSAAlgorithm.to_jwk(foreign.public_key(), as_dict=True)
    fixed = JwksCache.from_document({"keys": [dict(pub, kid="k1", alg="RS256")]})
    bad = jwt.encode(dict(claims, exp=str(claims["exp"])), foreign, algorithm="RS256", headers={"kid": "k1", "typ": "at+jwt"})
    with pytest.raises(InvalidToken):
        verifier(server, keys=fixed).verify("POST", server.resource, f"Bearer {bad}")


def test_unknown_kid_refetches_after_rotation_interval(server):
    at = server.bearer()["access_token"]
    t = [1000.0]
    keys = JwksCache(server.issuer + "/jwks.json", min_refresh_interval=10, clock=lambda: t[0])
    keys._keys, keys._fetched_at = {}, 1000.0  # a stale set without the current key
    v = verifier(server, keys=keys)
    with pytest.raises(InvalidToken):
        v.verify("POST", server.resource, f"Bearer {at}")
    assert keys.fetches == 0, "no refetch inside the interval"
    t[0] += 11
    assert v.verify("POST", server.resource, f"Bearer {at}").kind == "access"
    assert keys.fetches == 1


def test_typ_checks(server):
    """A token signed by the issuer's key but of another type is refused:
    here an ID-token-like `typ: JWT` (built with a fixed key set)."""
    key = AgentKey()
    fixed = JwksCache.from_document({"keys": [dict(key.public_jwk, kid="k", alg="ES256")]})
    now = int(time.time())
    claims = {"iss": server.issuer, "sub": "s", "aud": server.resource, "client_id": "c", "jti": "j", "iat": now, "exp": now + 60}
    v = verifier(server, keys=fixed)
    for typ in ("JWT", None, "dpop+jwt", "application/at+jwt-x"):
        headers = {"kid": "k", "typ": typ} if typ else {"kid": "k"}
        token = jwt.encode(claims, key.private_key, algorithm="ES256", headers=headers)
        if typ is None:  # PyJWT adds typ: JWT unless told not to
            token = jwt.encode(claims, key.private_key, algorithm="ES256", headers={"kid": "k", "typ": None})
        with pytest.raises(InvalidToken):
            v.verify("POST", server.resource, f"Bearer {token}")
    ok = jwt.encode(claims, key.private_key, algorithm="ES256", headers={"kid": "k", "typ": "application/AT+JWT"})
    assert v.verify("POST", server.resource, f"Bearer {ok}").kind == "access"


def test_passports_refused_unless_opted_in(server, agent):
    p = agent.passport(audience=server.resource)["access_token"]
    url = server.resource
    # Default: refused before any cryptography, with or without a proof.
    with pytest.raises(InvalidToken, match="passport is not an access token"):
        verifier(server).verify("POST", url, f"DPoP {p}", agent.key.dpop_proof("POST", url, p))
    with pytest.raises(InvalidToken, match="passport is not an access token"):
        verifier(server).verify("POST", url, f"Bearer {p}")
    # Opted in: DPoP-bound, no scope unless the policy grants some.
    v = verifier(server, accept_passports=True)
    got = v.verify("POST", url, f"DPoP {p}", agent.key.dpop_proof("POST", url, p))
    assert got.kind == "passport" and got.scopes == () and got.claims["agent_id"] == agent.client_id
    assert "scope" not in got.claims
    with pytest.raises(InvalidToken, match="DPoP scheme"):
        v.verify("POST", url, f"Bearer {p}")
    policy = verifier(server, accept_passports=True,
                      passport_scopes=lambda c: ["tools:read"] if c["agent_name"] == "py-agent" else [])
    got = policy.verify("POST", url, f"DPoP {p}", agent.key.dpop_proof("POST", url, p))
    assert got.scopes == ("tools:read",)
    # A passport for another site, or for none.
    none = agent.passport()["access_token"]
    with pytest.raises(InvalidToken, match="names no site"):
        v.verify("POST", url, f"DPoP {none}", agent.key.dpop_proof("POST", url, none))
    site = agent.passport(audience="https://site.example.com")["access_token"]
    with pytest.raises(InvalidToken, match="another site"):
        v.verify("POST", url, f"DPoP {site}", agent.key.dpop_proof("POST", url, site))


def test_authorization_header_shapes_and_challenges(server):
    v = verifier(server)
    with pytest.raises(MissingToken) as e:
        v.verify("POST", server.resource, None)
    status, headers = e.value.challenge(resource_metadata="https://r/.well-known/oauth-protected-resource/mcp", scope="tools:read")
    assert status == 401
    assert headers[0] == ("WWW-Authenticate", 'Bearer realm="agentauth", resource_metadata="https://r/.well-known/oauth-protected-resource/mcp", scope="tools:read"')
    assert headers[1][1].startswith("DPoP resource_metadata=") and 'algs="ES256 EdDSA Ed25519 RS256 PS256"' in headers[1][1]
    with pytest.raises(MissingToken):
        v.verify("POST", server.resource, "Basic abc")
    with pytest.raises(InvalidRequest):
        v.verify("POST", server.resource, ["Bearer a", "Bearer b"])
    with pytest.raises(InvalidToken) as e:
        v.verify("POST", server.resource, "Bearer not-a-jwt")
    status, headers = e.value.challenge()
    assert status == 401 and [h[1].split(" ")[0] for h in headers] == ["Bearer", "DPoP"]


@pytest.mark.anyio
async def test_async_verify(server, agent):
    v = verifier(server)
    at = agent.client_credentials(resource=server.resource, scope="tools:read")["access_token"]
    got = await v.averify("POST", server.resource, f"DPoP {at}", agent.key.dpop_proof("POST", server.resource, at))
    assert got.kind == "access"


def test_nonce_key_rotates_and_expires():
    from agentauth import NonceKey

    key = NonceKey(b"k" * 32, 300)
    n = key.current(1_000_000)
    assert key.is_valid(n, 1_000_000) and key.is_valid(n, 1_000_300), "valid in the next window"
    assert not key.is_valid(n, 1_000_700), "stale after two windows"
    assert not NonceKey(b"j" * 32, 300).is_valid(n, 1_000_000), "another key"
    assert not key.is_valid("garbage", 1_000_000) and not key.is_valid("", 1_000_000)


@pytest.mark.anyio
async def test_concurrent_cold_start_fetches_the_jwks_once(server):
    import anyio

    keys = JwksCache(server.issuer + "/jwks.json")
    v = verifier(server, keys=keys, token_cache=False)
    at = server.bearer()["access_token"]
    async with anyio.create_task_group() as tg:
        for _ in range(20):
            tg.start_soon(v.averify, "POST", server.resource, f"Bearer {at}")
    assert keys.fetches == 1


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
def test_claims_are_read_only_and_short_rsa_proof_keys_refused(server, agent):
    v = verifier(server)
    got = v.verify("POST", server.resource, f"Bearer {server.bearer()['access_token']}")
    with pytest.raises(TypeError):
        got.claims["scope"] = "tools:admin"  # type: ignore[index]
    at = agent.client_credentials(resource=server.resource, scope="tools:read")["access_token"]
    short = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    jwk = jwt.algorithms.RSAAlgorithm.to_jwk(short.public_key(), as_dict=True)
    proof = jwt.encode({"jti": "s1", "htm": "POST", "htu": server.resource, "iat": int(time.time())}, short,
                       algorithm="RS256", headers={"typ": "dpop+jwt", "jwk": jwk})
    with pytest.raises(InvalidDpopProof, match="2048"):
        v.verify("POST", server.resource, f"DPoP {at}", proof)


@pytest.mark.parametrize("alg", ["Ed25519", "EdDSA"])
def test_ed25519_agents_under_both_names(server, alg):
    """An agent with an Ed25519 key: the server takes its assertions and its
    proofs (`Ed25519`, RFC 9864, or `EdDSA`), and so does the verifier."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from conftest import make_agent

    agent = make_agent(server, f"ed-{alg}", AgentKey(Ed25519PrivateKey.generate(), ed25519_alg=alg))
    token = agent.client_credentials(resource=server.resource, scope="tools:read")
    assert token["token_type"] == "DPoP"
    at = token["access_token"]
    proof = agent.key.dpop_proof("POST", server.resource, at)
    assert jwt.get_unverified_header(proof)["alg"] == alg
    got = verifier(server).verify("POST", server.resource, f"DPoP {at}", proof)
    assert got.dpop_jkt == agent.key.jkt


def test_htu_normalization_and_replay_retention():
    from agentauth.verifier import replay_retention, same_htu

    assert same_htu("https://AS.example.com:443/token?x=1#f", "https://as.example.com/token")
    assert not same_htu("https://as.example.com/token/", "https://as.example.com/token")
    assert not same_htu("http://as.example.com/token", "https://as.example.com/token")
    assert not same_htu("https://as.example.com:8443/token", "https://as.example.com/token")
    assert not same_htu("https://as.example.com:99999/token", "https://as.example.com/token")
    assert replay_retention(1000, 1000, 60) == 61
    assert replay_retention(1060, 1000, 60) == 121
    assert replay_retention(0, 1000, 60) == 1
