#!/usr/bin/env python3
"""Many sites waiting on login outcomes: opens N server-sent event streams
(GET /login-requests/{id}/events, 100 streams per login request, since a
site may create 120 requests a minute and hold 100 open; spread over
loopback source addresses, since one address may hold 100 streams) and
measures
the server's resident memory and CPU while they wait (heartbeats every
15 s, a re-read of each row every 5 s).

    bench/login_listeners.py ISSUER SITE_ID SITE_SECRET SERVER_PID [N]

Standard library only (asyncio), so that it runs anywhere Python 3 does.
"""
import asyncio
import base64
import json
import sys
import time
import urllib.parse
import urllib.request

issuer, site_id, secret, pid = sys.argv[1:5]
n = int(sys.argv[5]) if len(sys.argv) > 5 else 10_000
host, port = urllib.parse.urlsplit(issuer).hostname, urllib.parse.urlsplit(issuer).port
basic = "Basic " + base64.b64encode(
    f"{urllib.parse.quote(site_id, safe='')}:{urllib.parse.quote(secret, safe='')}".encode()
).decode()


def status(key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def cpu_seconds():
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().split(")")[-1].split()
    return (int(fields[11]) + int(fields[12])) / 100.0


def create():
    req = urllib.request.Request(
        f"{issuer}/login-requests", data=b"", method="POST",
        headers={"authorization": basic, "content-type": "application/x-www-form-urlencoded"})
    with urllib.request.urlopen(req) as r:
        return json.load(r)["login_request_id"]


async def listen(i, request_id, opened, done):
    source = f"127.0.{1 + i // 25000}.{1 + (i // 100) % 250}"
    reader, writer = await asyncio.open_connection(host, port, local_addr=(source, 0))
    writer.write(
        f"GET /login-requests/{request_id}/events HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Authorization: {basic}\r\nAccept: text/event-stream\r\n\r\n".encode())
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    if b" 200 " not in head.split(b"\r\n")[0]:
        raise RuntimeError(head[:200])
    opened.append(1)
    while True:
        line = await reader.readline()
        if not line:
            break
        if line.startswith(b"event: outcome"):
            done.append(time.monotonic())
            break
    writer.close()


async def main():
    ids = [create() for _ in range((n + 99) // 100)]
    rss0, cpu0 = status("VmRSS"), cpu_seconds()
    opened, done = [], []
    tasks = [asyncio.create_task(listen(i, ids[i // 100], opened, done)) for i in range(n)]
    while len(opened) < n:
        await asyncio.sleep(0.2)
        if any(t.done() and t.exception() for t in tasks):
            raise next(t.exception() for t in tasks if t.done() and t.exception())
    rss1, t0, cpu1 = status("VmRSS"), time.monotonic(), cpu_seconds()
    await asyncio.sleep(30)
    cpu2 = cpu_seconds()
    rss2 = status("VmRSS")
    print(f"{n} streams open: server RSS {rss0 / 1024:.1f} MiB before, {rss1 / 1024:.1f} MiB with them "
          f"({(rss1 - rss0) / n:.1f} KiB each), {rss2 / 1024:.1f} MiB after 30 s waiting; "
          f"CPU while waiting {100 * (cpu2 - cpu1) / 30:.1f}% of one core")
    for t in tasks:
        t.cancel()


if __name__ == "__main__":
    asyncio.run(main())
