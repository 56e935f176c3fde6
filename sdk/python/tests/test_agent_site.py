"""The agent and site roles against the running server: passport → token
exchange → DPoP-bound call; a proof-of-work login completed by events and
by polling, the passport verified and its key proven."""

from __future__ import annotations

import json
import threading

import pytest

from agentauth import InvalidToken, ResourceVerifier
from agentauth.agent import PASSPORT_TOKEN_TYPE, solve_pow
from agentauth.site import Site


def test_passport_exchange_dpop_call(server, agent):
    passport = agent.passport()  # names no site: for token exchange and login
    assert passport["issued_token_type"] == PASSPORT_TOKEN_TYPE
    token = agent.exchange(passport["access_token"], subject_token_type=PASSPORT_TOKEN_TYPE, resource=server.resource)
    assert token["token_type"] == "DPoP"
    v = ResourceVerifier(server.issuer, server.resource)
    got = v.verify("POST", server.resource, f"DPoP {token['access_token']}",
                   agent.key.dpop_proof("POST", server.resource, token["access_token"]))
    assert got.dpop_jkt == agent.key.jkt
    assert got.subject == agent.client_id and got.act_chain == []


def test_delegation_chain(server, agent):
    """Another agent of the same owner acts for the first: the first's
    passport names it, it exchanges that passport; `act` names it."""
    from agentauth.agent import Agent, AgentKey

    key = AgentKey()
    (server.dir / "agent2.jwk").write_text(json.dumps(key.public_jwk))
    out = server.cli("agent", "create", "--owner", "alice", "--name", "py-helper", "--scope", "tools:read",
                     "--jwk", str(server.dir / "agent2.jwk"))
    helper = Agent(server.issuer, out.split()[-1], key)
    passport = agent.passport(audience=f"{server.issuer}/agents/{helper.client_id}")["access_token"]
    token = helper.exchange(passport, subject_token_type=PASSPORT_TOKEN_TYPE, resource=server.resource)
    v = ResourceVerifier(server.issuer, server.resource)
    got = v.verify("POST", server.resource, f"DPoP {token['access_token']}",
                   helper.key.dpop_proof("POST", server.resource, token["access_token"]))
    assert got.subject == agent.client_id
    assert [a["sub"] for a in got.act_chain] == [helper.client_id]
    # The subject's key cannot use the helper's token.
    with pytest.raises(Exception):
        v.verify("POST", server.resource, f"DPoP {token['access_token']}",
                 agent.key.dpop_proof("POST", server.resource, token["access_token"]))


@pytest.fixture(scope="module")
def site(server):
    c = json.loads(server.cli("client", "create", "--name", "Py Site", "--grant-type",
                              "urn:agentauth:params:grant-type:pow-login", "--json"))
    return Site(server.issuer, c["client_id"], c["client_secret"])


def test_solve_pow():
    import hashlib
    n = solve_pow("abc", 12)
    d = hashlib.sha256(b"abc" + n.encode()).digest()
    assert d[0] == 0 and d[1] >> 4 == 0


def test_pow_login_by_events(server, agent, site):
    request = site.start_login(scope="tools:read", agent=agent.client_id)
    answered = {}
    t = threading.Thread(target=lambda: answered.update(agent.answer_login_request(request["login_request_id"])))
    t.start()
    outcome = site.wait_events(request, timeout=60)
    t.join(30)
    assert answered["answer"]["status"] == "approved" and answered["site"]["client_id"] == site.client_id
    assert outcome["status"] == "approved"
    claims = site.verify_passport(outcome["passport"])
    assert claims["sub"] == agent.client_id and claims["cnf"]["jkt"] == agent.key.jkt
    # The agent proves its key on a later request to the site.
    url = "https://site.example.com/api"
    p = outcome["passport"]
    got = site.verify_request("GET", url, f"DPoP {p}", agent.key.dpop_proof("GET", url, p))
    assert got.kind == "passport" and got.claims["agent_id"] == agent.client_id
    # A passport for another audience is not this site's.
    other = agent.passport(audience="https://elsewhere.example.com")["access_token"]
    with pytest.raises(InvalidToken):
        site.verify_passport(other)


def test_pow_login_by_polling(server, agent, site):
    request = site.start_login(agent=agent.client_id)
    request = dict(request, interval=1)
    agent.answer_login_request(request["login_request_id"])
    outcome = site.poll(request, timeout=60)
    assert outcome["status"] == "approved"
    assert site.verify_passport(outcome["passport"])["sub"] == agent.client_id


def test_pow_login_denied(server, agent, site):
    request = site.start_login(agent=agent.client_id)
    agent.answer_login_request(request["login_request_id"], approve=False)
    assert site.wait_events(request, timeout=30)["status"] == "denied"


def test_bridge_certificate(server, agent):
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    key, chain = agent.bridge_certificate()
    leaf, ca = chain[0], chain[1]
    assert leaf.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == agent.client_id
    uris = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.UniformResourceIdentifier)
    assert uris[0] == f"{server.issuer}/agents/{agent.client_id}"
    raw = lambda k: k.public_bytes(Encoding.Raw, PublicFormat.Raw)  # noqa: E731
    assert raw(leaf.public_key()) == raw(key.public_key())
    leaf.verify_directly_issued_by(ca)
