"""Throughput of the verifier beside PyJWT's bare `jwt.decode` on the same
token (bearer, and DPoP-bound: the token and its proof). Runs only with
AGENTAUTH_BENCH=1; writes bench/results/verify-<date>.json and .md."""

from __future__ import annotations

import json
import os
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

import jwt
import pytest

from agentauth import JwksCache, ReplayCache, ResourceVerifier

pytestmark = pytest.mark.skipif(os.environ.get("AGENTAUTH_BENCH") != "1", reason="set AGENTAUTH_BENCH=1")
N = int(os.environ.get("AGENTAUTH_BENCH_N", "2000"))
RESULTS = Path(__file__).resolve().parent.parent / "bench" / "results"


def rate(fn, items) -> float:
    """Best of three runs, operations per second."""
    best = 0.0
    for _ in range(3):
        t = time.perf_counter()
        for item in items:
            fn(item)
        best = max(best, len(items) / (time.perf_counter() - t))
    return best


def test_bench(server, agent):
    keys = JwksCache(server.issuer + "/jwks.json")
    bearer = server.bearer()["access_token"]
    kid = jwt.get_unverified_header(bearer)["kid"]
    key = keys.get(kid)
    url = server.resource
    bare_opts = dict(algorithms=[key.alg], audience=url, issuer=server.issuer,
                     options={"require": ["exp", "iat", "iss", "aud", "sub", "jti"]})

    def bare_bearer(token):
        header = jwt.get_unverified_header(token)
        assert header["typ"] == "at+jwt"
        jwt.decode(token, keys.get(header["kid"]).key, **bare_opts)

    cold = ResourceVerifier(server.issuer, url, keys=keys, token_cache=False)
    warm = ResourceVerifier(server.issuer, url, keys=keys)
    tokens = [bearer] * N
    results = {
        "bearer": {
            "pyjwt_decode": rate(bare_bearer, tokens),
            "agentauth_no_token_cache": rate(lambda t: cold.verify("POST", url, f"Bearer {t}"), tokens),
            "agentauth_token_cache": rate(lambda t: warm.verify("POST", url, f"Bearer {t}"), tokens),
        }
    }
    bound = agent.client_credentials(resource=url, scope="tools:read")["access_token"]
    # Proofs are spent once: one per request, made before timing (x3 runs).
    proofs = [agent.key.dpop_proof("POST", url, bound) for _ in range(3 * N)]

    def bare_dpop(proof):
        bare_bearer(bound)
        header = jwt.get_unverified_header(proof)
        jwt.decode(proof, jwt.PyJWK(header["jwk"], algorithm=header["alg"]).key, algorithms=[header["alg"]])

    def ours(v):
        it = iter(proofs)
        return lambda _: v.verify("POST", url, f"DPoP {bound}", next(it))

    results["dpop"] = {
        "pyjwt_decode_token_and_proof": rate(bare_dpop, proofs[:N]),
        "agentauth_no_token_cache": rate(ours(ResourceVerifier(server.issuer, url, keys=keys, token_cache=False)), range(N)),
        "agentauth_token_cache": rate(ours(ResourceVerifier(server.issuer, url, keys=keys, replay=ReplayCache())), range(N)),
    }
    for kind, r in results.items():
        bare = next(v for k, v in r.items() if k.startswith("pyjwt"))
        r["overhead_no_token_cache_pct"] = round((bare / r["agentauth_no_token_cache"] - 1) * 100, 1)
        r["overhead_token_cache_pct"] = round((bare / r["agentauth_token_cache"] - 1) * 100, 1)
    meta = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "n": N, "alg": key.alg,
            "python": platform.python_version(), "pyjwt": jwt.__version__, "machine": platform.machine(),
            "cpus": os.cpu_count()}
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = RESULTS / f"verify-{key.alg}-{meta['date'][:10]}"
    stem.with_suffix(".json").write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    # The bound: at most 25% on top of the bare library verify.
    assert results["bearer"]["overhead_no_token_cache_pct"] <= 25
    assert results["dpop"]["overhead_no_token_cache_pct"] <= 25
