#!/usr/bin/env python3
"""Replicated topic failover with an unchanged pynsq Reader (issue 14).

Usage: test_pynsq_replicated.py --lookupd-http=127.0.0.1:4161
                                --member=ID,HTTP_ADDR,PID [--member=...] --topic=T

The members are nsqd processes of one replication cluster (--raft-address/--raft-peers) that
register with the lookupd; the topic was created with replicas=<number of members>. A pynsq
Reader that knows only the lookupd (lookupd_poll_interval=1) consumes channel "py"; a
publisher posts numbered messages over HTTP /pub, round-robin over the living members
(a follower forwards to the leader), and records every body answered 200 OK. After a third of
the messages were received, the member leading the topic (GET /topic/replication) is
SIGKILLed by the pid the test gave (a process the test started). Publishing goes on through
the survivors; the Reader must find the new leader through lookupd by itself.

Verdict line: "acknowledged N, delivered N unique, lost 0, duplicates D" — exit 0 only when
lost is 0. Duplicates are allowed (at least once: messages in flight at the kill come back).
Bounded by --timeout; synchronisation by bounded polling, never a fixed sleep.
"""

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import nsq
import tornado


def http_blocking(addr, method, path, body=None, timeout=10):
    req = urllib.request.Request("http://%s%s" % (addr, path), data=body, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except (urllib.error.URLError, ConnectionError, OSError) as e:
        return None, str(e).encode()


async def http(addr, method, path, body=None):
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, http_blocking, addr, method, path, body)


def leader_of(members, topic, dead):
    """(id, http) of the member that delivers the topic, asked of the living members."""
    for mid, addr, _pid in members:
        if mid in dead:
            continue
        status, data = http_blocking(addr, "GET", "/topic/replication?" +
                                     urllib.parse.urlencode({"topic": topic}), timeout=2)
        if status == 200:
            st = json.loads(data)
            if st.get("active"):
                return mid
    return None


async def main_async(args):
    members = []
    for m in args.member:
        mid, addr, pid = m.split(",")
        members.append((int(mid), addr, int(pid)))
    topic = args.topic
    received = {}

    def handle(msg):
        received[msg.body] = received.get(msg.body, 0) + 1
        return True

    reader = nsq.Reader(
        topic=topic, channel="py", message_handler=handle,
        lookupd_http_addresses=["http://%s" % l for l in args.lookupd_http],
        lookupd_poll_interval=1, lookupd_poll_jitter=0.0,
        max_in_flight=20, heartbeat_interval=5, name="replicated_reader")

    acked = []
    dead = set()
    killed = {}
    total = args.count
    i = 0
    rr = 0
    t0 = time.monotonic()
    deadline = t0 + args.timeout - 10
    while i < total:
        if time.monotonic() > deadline:
            print("FAIL: publishing did not finish (acknowledged %d of %d)" % (len(acked), total))
            return 1
        if not killed and len(received) >= total // 3:
            lid = leader_of(members, topic, dead)
            if lid is None:
                await asyncio.sleep(0.05)
                continue
            pid = [p for m, _, p in members if m == lid][0]
            os.kill(pid, signal.SIGKILL)
            dead.add(lid)
            killed["at"] = time.monotonic()
            killed["acked"] = len(acked)
            print("killed leader node %d (pid %d) after %d received, %d acknowledged"
                  % (lid, pid, len(received), len(acked)), flush=True)
        living = [m for m in members if m[0] not in dead]
        mid, addr, _ = living[rr % len(living)]
        rr += 1
        body = ("r-%05d" % i).encode()
        status, data = await http(addr, "POST", "/pub?" + urllib.parse.urlencode({"topic": topic}), body)
        if status == 200:
            acked.append(body)
            if killed and "first_ok" not in killed:
                killed["first_ok"] = time.monotonic() - killed["at"]
            i += 1
        else:
            # Not acknowledged (no leader yet, or the member just died): publish it again.
            await asyncio.sleep(0.02)
        if not killed:
            # Let the Reader keep up so the kill happens mid-stream.
            while len(received) < len(acked) - 50 and time.monotonic() < deadline:
                await asyncio.sleep(0.01)

    want = set(acked)
    while not want.issubset(received.keys()):
        if time.monotonic() > deadline + 8:
            break
        await asyncio.sleep(0.05)
    lost = len(want - set(received.keys()))
    dups = sum(n - 1 for n in received.values())
    print("pynsq %s / tornado %s: acknowledged %d, delivered %d unique, lost %d, duplicates %d; "
          "first OK %.2fs after the kill"
          % (nsq.__version__, tornado.version, len(want), len(want & set(received.keys())), lost,
             dups, killed.get("first_ok", -1)), flush=True)
    reader.close()
    return 0 if lost == 0 and killed else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lookupd-http", action="append", required=True)
    ap.add_argument("--member", action="append", required=True, help="ID,HTTP_ADDR,PID")
    ap.add_argument("--topic", required=True)
    ap.add_argument("--count", type=int, default=600)
    ap.add_argument("--timeout", type=int, default=60)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    def on_alarm(signum, frame):
        print("FAIL: overall timeout of %ds" % args.timeout, flush=True)
        os._exit(3)

    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(args.timeout)
    rc = asyncio.run(main_async(args))
    sys.stdout.flush()
    os._exit(rc)


if __name__ == "__main__":
    main()
