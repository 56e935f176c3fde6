#!/usr/bin/env python3
"""Kill-switch propagation across two agentauth nodes on one PostgreSQL.

Two server processes share the database and the KEK (as real nodes do).
An agent gets a token at node A. Each trial disables the agent with the
CLI (`agentauth agent disable`, the operator's path: a write to the shared
database, as another node or the CLI makes it) and polls node B's
introspection every 5 ms until the token is inactive; then enables it
again. What the agent held before a kill stays dead after it is enabled
(README: the kill switch), so each trial starts from a fresh token, got
once the kill's cut-off has passed (the grant answers 503 until then) and
seen active at node B. Prints the propagation time
from the CLI's start (conservative: it includes the CLI's own start-up and
commit) and from the CLI's exit (the commit is done), median / p90 / max.

The same trials time the token status lists (issue 31): from the CLI's
exit until the token's bit is set in the list every node serves (both
nodes polled every 5 ms, each answer a freshly fetched list token whose
`lst` is inflated here). Called by bench/agents.sh.
"""
import argparse
import base64
import zlib
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request


def post(url, body, auth=None):
    req = urllib.request.Request(url, data=body.encode(), method="POST")
    req.add_header("content-type", "application/x-www-form-urlencoded")
    if auth:
        req.add_header("authorization", "Basic " + auth)
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.load(r)


def status_bit(port, token):
    """The bit of `token` in the status list node `port` serves now."""
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    ref = claims["status"]["status_list"]
    path = urllib.parse.urlparse(ref["uri"]).path
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}",
                                 headers={"accept": "application/statuslist+jwt"})
    with urllib.request.urlopen(req, timeout=5) as r:
        jwt = r.read().decode()
    body = jwt.split(".")[1]
    lst = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))["status_list"]["lst"]
    bits = zlib.decompress(base64.urlsafe_b64decode(lst + "=" * (-len(lst) % 4)))
    idx = ref["idx"]
    return (bits[idx // 8] >> (idx % 8)) & 1


def mcp_refuses(token):
    """Whether the example MCP server's guard refuses `token` (401)."""
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "ping"}).encode()
    req = urllib.request.Request("http://127.0.0.1:18590/mcp", data=body, method="POST", headers={
        "authorization": "Bearer " + token, "content-type": "application/json",
        "accept": "application/json, text/event-stream"})
    try:
        with urllib.request.urlopen(req, timeout=5):
            return False
    except urllib.error.HTTPError as e:
        return e.code == 401


def wait_up(url):
    for _ in range(150):
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except Exception:
            time.sleep(0.1)
    sys.exit(f"not up: {url}")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--bin", required=True)
    p.add_argument("--gen", required=True)
    p.add_argument("--keys", required=True)
    p.add_argument("--database-url", required=True)
    p.add_argument("--trials", type=int, default=100)
    p.add_argument("--mcp", help="the example MCP server: also time the kill at an offline verifier")
    p.add_argument("--status-ttl", type=int, default=10, help="the servers' --status-list-ttl")
    a = p.parse_args()
    db = ["--database-url", a.database_url]
    cli = lambda *args: subprocess.run([a.bin, *args, *db], check=True, capture_output=True, text=True).stdout.strip()
    env = dict(os.environ, AGENTAUTH_PASSWORD="bench password 1")
    subprocess.run([a.bin, "user", "create", "alice", *db], check=True, capture_output=True, env=env)
    agent = cli("agent", "create", "--owner", "alice", "--name", "a", "--scope", "read", "--jwk", f"{a.keys}/a.jwk")
    other = cli("agent", "create", "--owner", "alice", "--name", "b", "--scope", "read", "--jwk", f"{a.keys}/b.jwk")
    rs = json.loads(cli("client", "create", "--name", "introspector", "--introspect", "*", "--json"))
    rs_auth = base64.b64encode(f"{rs['client_id']}:{rs['client_secret']}".encode()).decode()

    issuer = "http://127.0.0.1:18581"
    nodes = []
    for port in (18581, 18582):
        nodes.append(subprocess.Popen(
            [a.bin, "serve", "--listen", f"127.0.0.1:{port}", "--issuer", issuer,
             "--resource", "https://mcp.example.com/mcp", "--status-list-ttl", str(a.status_ttl), *db],
            stderr=subprocess.DEVNULL))
    mcp = None
    try:
        for port in (18581, 18582):
            wait_up(f"http://127.0.0.1:{port}/healthz")
        if a.mcp:
            # An offline verifier: the kit against node A's JWKS and
            # status lists, no introspection.
            mcp = subprocess.Popen([a.mcp, "--issuer", issuer, "--listen", "127.0.0.1:18590",
                                    "--resource", "https://mcp.example.com/mcp"],
                                   stderr=subprocess.DEVNULL)
            nodes.append(mcp)
            for _ in range(150):
                try:
                    if mcp_refuses("not-a-token"):
                        break
                except OSError:
                    pass
                time.sleep(0.1)
            else:
                sys.exit("the example MCP server is not up")
        def fresh_token():
            # A new client assertion each time (its jti is single-use). Node A
            # may still hold the agent as disabled for up to a second (401),
            # and then answers 503 until the kill's cut-off has passed.
            for _ in range(100):
                body = subprocess.run([a.gen, "bodies", "client_credentials", issuer, agent, other, a.keys, "1"],
                                      check=True, capture_output=True, text=True).stdout.strip()
                try:
                    return post("http://127.0.0.1:18581/token", body)["access_token"]
                except urllib.error.HTTPError as e:
                    if e.code not in (401, 503):
                        raise
                    time.sleep(0.1)
            sys.exit("no token after the cut-off")

        token = None
        introspect_b = lambda: post("http://127.0.0.1:18582/introspect",
                                    "token=" + urllib.parse.quote(token), rs_auth)["active"]

        from_start, from_commit, lists, offline = [], [], [], []
        for _ in range(a.trials):
            # A node whose view of the agent is still stale may issue a
            # token born dead (its `iat` is before the cut-off): revoked at
            # once, by index too. Wait until a token is seen live.
            for _ in range(50):
                token = fresh_token()
                has_status = "status" in json.loads(base64.urlsafe_b64decode(
                    token.split(".")[1] + "=" * (-len(token.split(".")[1]) % 4)))
                time.sleep(0.6)
                if introspect_b() and not (has_status and (status_bit(18581, token) or status_bit(18582, token))) \
                        and not (mcp and mcp_refuses(token)):
                    break
            else:
                sys.exit("no live fresh token after the cut-off")
            t0 = time.monotonic()
            cli("agent", "disable", agent)
            t1 = time.monotonic()
            # A server from before the status lists: introspection only.
            pending = {18581, 18582} if has_status else set()
            introspected = None
            refused = None if mcp else t1
            while pending or introspected is None or refused is None:
                if introspected is None and not introspect_b():
                    introspected = time.monotonic()
                if pending:
                    pending = {p for p in pending if not status_bit(p, token)}
                    if not pending:
                        t3 = time.monotonic()
                if refused is None and mcp_refuses(token):
                    refused = time.monotonic()
                if pending or introspected is None or refused is None:
                    time.sleep(0.005)
            if mcp:
                offline.append((refused - t1) * 1000)
            from_start.append((introspected - t0) * 1000)
            from_commit.append((introspected - t1) * 1000)
            if has_status:
                lists.append((t3 - t1) * 1000)
            else:
                t3 = None
            cli("agent", "enable", agent)

        def row(name, xs):
            xs = sorted(xs)
            p90 = xs[int(len(xs) * 0.9) - 1]
            return f"| {name} | {statistics.median(xs):.0f} | {p90:.0f} | {xs[-1]:.0f} |"

        print(f"Kill switch across two nodes on one PostgreSQL, {a.trials} trials (ms until node B's introspection says inactive):")
        print()
        print("| measured from | median | p90 | max |")
        print("|---|---|---|---|")
        print(row("the CLI's start (disable command)", from_start))
        print(row("the CLI's exit (committed)", from_commit))
        if not lists:
            return
        print()
        print(f"Kill in the token status list of every node (both polled), {a.trials} trials (ms from the CLI's exit):")
        print()
        print("| measured from | median | p90 | max |")
        print("|---|---|---|---|")
        print(row("the CLI's exit (committed), bit set at both nodes", lists))
        if offline:
            print()
            print(f"Kill at an offline verifier (the example MCP server: JWKS and status lists, no introspection), "
                  f"--status-list-ttl {a.status_ttl}, {a.trials} trials (ms from the CLI's exit until it answers 401):")
            print()
            print("| measured from | median | p90 | max |")
            print("|---|---|---|---|")
            print(row("the CLI's exit (committed)", offline))
    finally:
        for n in nodes:
            n.terminate()
        for n in nodes:
            n.wait(timeout=10)


if __name__ == "__main__":
    main()
