#!/usr/bin/env python3
"""Cluster interop test: pynsq's Reader discovering our nsqds through our nsqlookupd.

Usage: test_pynsq_lookupd.py --lookupd-http=127.0.0.1:4161 [--lookupd-http=...]
                             --nsqd-http=127.0.0.1:4151 --nsqd-http=127.0.0.1:5151 [...]

The nsqds must be registered with every lookupd given (--lookupd-tcp-address) and announce
an address this host can reach (--broadcast-address=127.0.0.1). Messages are published over
each nsqd's HTTP API (/pub, /mpub); the Readers know only `lookupd_http_addresses` and poll
them every second (lookupd_poll_interval=1; pynsq's default is 60 s).

Scenarios:
  1. known topic: the topic and channel exist on every nsqd and every lookupd lists all of
     them; a Reader receives every message published to every nsqd exactly once, holds one
     connection per nsqd, and the per-nsqd /stats counters match;
  2. late topic: a Reader starts before any nsqd has the topic (lookupd answers 404), then
     the topic is created on every nsqd by /pub; the Reader finds them on a later poll and
     receives everything.

Synchronisation is by bounded polling, never a fixed sleep. Exits 0 when all scenarios
passed, non-zero with a message naming the failed scenario otherwise; the whole run is
bounded by --timeout.
"""

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request

import nsq
import tornado

LOOKUPDS = []
NSQDS = []
CURRENT = ["startup"]


class Failure(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Failure(msg)


def eq(actual, expected, what):
    if actual != expected:
        raise Failure("%s: expected %r, got %r" % (what, expected, actual))


class ErrorCollector(logging.Handler):
    """pynsq logs error frames and connection failures at ERROR level."""

    def __init__(self):
        super().__init__(level=logging.ERROR)
        self.records = []

    def emit(self, record):
        try:
            msg = record.getMessage()
        except Exception:  # pragma: no cover
            msg = str(record.msg)
        if CLOSING[0] and any(a in msg for a in ("failed to unpack size", "Stream is closed")):
            return  # the read pending when we closed our own Readers
        self.records.append(msg)


ERRORS = ErrorCollector()
CLOSING = [False]


class LookupdQueryLog(logging.Handler):
    """Keeps pynsq's "lookupd <url> query error: <e>" warnings (a 404 is one)."""

    def __init__(self):
        super().__init__(level=logging.WARNING)
        self.records = []

    def emit(self, record):
        try:
            msg = record.getMessage()
        except Exception:  # pragma: no cover
            msg = str(record.msg)
        if "query error" in msg:
            self.records.append(msg)


LOOKUPD_QUERIES = LookupdQueryLog()


def assert_no_client_errors():
    if ERRORS.records:
        errs = list(ERRORS.records)
        ERRORS.records.clear()
        raise Failure("pynsq reported errors: %s" % errs)


# --------------------------------------------------------------------------------------------
# HTTP
# --------------------------------------------------------------------------------------------

def http_blocking(addr, method, path, body=None):
    """Returns (status, body bytes)."""
    req = urllib.request.Request("http://%s%s" % (addr, path), data=body, method=method)
    req.add_header("Accept", "application/vnd.nsq; version=1.0")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


async def http(addr, method, path, body=None):
    # urllib blocks: run it in a worker thread so pynsq's IOLoop keeps running meanwhile
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, http_blocking, addr, method, path, body)


def q(**params):
    return urllib.parse.urlencode(params)


async def http_ok(addr, method, path, body=None):
    status, data = await http(addr, method, path, body)
    if status != 200:
        raise Failure("%s http://%s%s: expected 200, got %d %r" % (method, addr, path, status, data))
    return data


async def channel_stats(nsqd, topic, channel):
    doc = json.loads(await http_ok(nsqd, "GET", "/stats?format=json&" + q(topic=topic)))
    for t in doc.get("topics") or []:
        if t["topic_name"] == topic:
            for c in t.get("channels") or []:
                if c["channel_name"] == channel:
                    return c
    return None


async def lookup_http_ports(lookupd, topic):
    """The http_port of every producer lookupd reports for the topic ([] on 404)."""
    status, data = await http(lookupd, "GET", "/lookup?" + q(topic=topic))
    if status == 404:
        return []
    if status != 200:
        raise Failure("lookupd %s /lookup?topic=%s: %d %r" % (lookupd, topic, status, data))
    doc = json.loads(data)
    producers = doc.get("producers")
    if producers is None:
        raise Failure("lookupd %s /lookup?topic=%s: no producers key in %r"
                      % (lookupd, topic, doc))
    return sorted(p["http_port"] for p in producers)


async def wait_for(cond, what, timeout=10.0):
    """Polls cond() every 20 ms until it returns a truthy value; Failure after timeout."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            last = cond()
            if asyncio.iscoroutine(last):
                last = await last
            if last:
                return last
        except Failure as e:
            last = e
        if time.monotonic() >= deadline:
            raise Failure("timed out after %.1fs waiting for %s (last: %r)" % (timeout, what, last))
        await asyncio.sleep(0.02)


async def wait_lookupds_list_all(topic, timeout=30.0):
    want = sorted(int(n.rsplit(":", 1)[1]) for n in NSQDS)
    for l in LOOKUPDS:
        seen = {}

        async def cond(l=l):
            seen["v"] = await lookup_http_ports(l, topic)
            return seen["v"] == want

        try:
            await wait_for(cond, "lookupd %s to list every nsqd for %s" % (l, topic), timeout)
        except Failure:
            raise Failure("lookupd %s: producers of %r have http ports %r, want %r"
                          % (l, topic, seen.get("v"), want))


async def wait_channels(topic, channel, expected_per_nsqd, timeout=10.0):
    """Waits until each nsqd's channel stats match expected_per_nsqd[i] exactly."""
    for nsqd, expected in zip(NSQDS, expected_per_nsqd):
        seen = {}

        async def cond(nsqd=nsqd, expected=expected):
            c = await channel_stats(nsqd, topic, channel)
            seen["v"] = None if c is None else {k: c.get(k) for k in expected}
            return seen["v"] == expected

        try:
            await wait_for(cond, "channel stats", timeout)
        except Failure:
            raise Failure("nsqd %s channel %s/%s: expected %r, last seen %r"
                          % (nsqd, topic, channel, expected, seen.get("v")))


async def finish_counts(nsqd, topic, channel):
    c = await channel_stats(nsqd, topic, channel)
    return [cl["finish_count"] for cl in ((c or {}).get("clients") or [])]


# --------------------------------------------------------------------------------------------
# pynsq Reader
# --------------------------------------------------------------------------------------------

class LookupdReader(object):
    """An nsq.Reader that knows only the lookupds; records and finishes every message."""

    counter = 0

    def __init__(self, topic, channel, max_in_flight):
        LookupdReader.counter += 1
        self.name = "lookupd_reader%d" % LookupdReader.counter
        self.received = []  # (body, attempts)
        self.reader = nsq.Reader(
            topic=topic,
            channel=channel,
            message_handler=self._handle,
            lookupd_http_addresses=["http://%s" % l for l in LOOKUPDS],
            lookupd_poll_interval=1,
            lookupd_poll_jitter=0.0,
            max_in_flight=max_in_flight,
            name=self.name,
            heartbeat_interval=5,
        )

    def _handle(self, msg):
        self.received.append((msg.body, msg.attempts))
        return True  # pynsq finishes the message

    def bodies(self):
        return [b for b, _ in self.received]

    def connected_ports(self):
        return sorted(c.port for c in self.reader.conns.values())

    def close(self):
        CLOSING[0] = True
        self.reader.close()


def expected_bodies(prefix, counts):
    return sorted(("%s-%d-%d" % (prefix, node, i)).encode()
                  for node in range(len(NSQDS)) for i in range(counts[0], counts[1]))


async def publish(prefix, topic, first, last):
    """Publishes bodies prefix-<node>-<i> for i in [first, last) to every nsqd: the first
    half one by one with /pub, the rest with one /mpub."""
    for node, nsqd in enumerate(NSQDS):
        bodies = [("%s-%d-%d" % (prefix, node, i)).encode() for i in range(first, last)]
        half = len(bodies) // 2
        for b in bodies[:half]:
            eq(await http_ok(nsqd, "POST", "/pub?" + q(topic=topic), b), b"OK", "/pub body")
        if bodies[half:]:
            eq(await http_ok(nsqd, "POST", "/mpub?" + q(topic=topic), b"\n".join(bodies[half:])),
               b"OK", "/mpub body")


async def wait_received(reader, want, timeout=20.0):
    await wait_for(lambda: len(reader.received) >= len(want),
                   "%d deliveries (have %d)" % (len(want), len(reader.received)), timeout)
    eq(sorted(reader.bodies()), want, "bodies received (each exactly once)")
    for body, attempts in reader.received:
        eq(attempts, 1, "attempts of %r" % body)


# --------------------------------------------------------------------------------------------
# scenarios
# --------------------------------------------------------------------------------------------

async def scenario_known_topic():
    topic, ch = "py_cluster", "c"
    for nsqd in NSQDS:
        await http_ok(nsqd, "POST", "/topic/create?" + q(topic=topic))
        await http_ok(nsqd, "POST", "/channel/create?" + q(topic=topic, channel=ch))
    await wait_lookupds_list_all(topic)

    await publish("known", topic, 0, 20)
    await wait_channels(topic, ch, [{"depth": 20, "message_count": 20, "client_count": 0}]
                        * len(NSQDS))

    r = LookupdReader(topic, ch, max_in_flight=3 * len(NSQDS))
    await wait_received(r, expected_bodies("known", (0, 20)))
    # one connection per nsqd, whatever lookupd was asked
    await wait_for(lambda: len(r.connected_ports()) == len(NSQDS),
                   "one Reader connection per nsqd (have %r)" % r.connected_ports())

    # live traffic over the established connections
    await publish("known", topic, 20, 30)
    await wait_received(r, expected_bodies("known", (0, 30)))
    await wait_channels(topic, ch, [{"depth": 0, "in_flight_count": 0, "deferred_count": 0,
                                     "message_count": 30, "requeue_count": 0,
                                     "timeout_count": 0, "client_count": 1}] * len(NSQDS))
    for nsqd in NSQDS:
        await wait_for(lambda nsqd=nsqd: finish_counts(nsqd, topic, ch),
                       "finish_count on %s" % nsqd)
        eq(await finish_counts(nsqd, topic, ch), [30], "finish_count of the client on %s" % nsqd)
    r.close()
    await wait_channels(topic, ch, [{"client_count": 0}] * len(NSQDS))
    CLOSING[0] = False
    assert_no_client_errors()


async def scenario_late_topic():
    topic, ch = "py_cluster_late", "c"
    for l in LOOKUPDS:
        eq(await lookup_http_ports(l, topic), [], "lookupd %s producers before the topic" % l)
    r = LookupdReader(topic, ch, max_in_flight=2 * len(NSQDS))
    # the Reader's first polls get 404 TOPIC_NOT_FOUND (pynsq logs them as query errors)
    await wait_for(lambda: [m for m in LOOKUPD_QUERIES.records
                            if "[%s]" % r.name in m and "404" in m],
                   "a 404 answer to the Reader's first lookupd query")
    # then every nsqd gets the topic by /pub
    # (no channel yet: each nsqd's topic keeps the messages for the first channel)
    await publish("late", topic, 0, 10)
    await wait_lookupds_list_all(topic)
    await wait_received(r, expected_bodies("late", (0, 10)), timeout=30.0)
    await wait_for(lambda: len(r.connected_ports()) == len(NSQDS),
                   "one Reader connection per nsqd (have %r)" % r.connected_ports())
    await wait_channels(topic, ch, [{"depth": 0, "in_flight_count": 0, "message_count": 10,
                                     "client_count": 1}] * len(NSQDS))
    r.close()
    await wait_channels(topic, ch, [{"client_count": 0}] * len(NSQDS))
    CLOSING[0] = False
    assert_no_client_errors()


SCENARIOS = [
    ("known topic: Reader via lookupd gets every nsqd's messages exactly once",
     scenario_known_topic),
    ("late topic: Reader started before the topic exists finds every nsqd on a later poll",
     scenario_late_topic),
]


async def main_async():
    passed = 0
    for name, fn in SCENARIOS:
        CURRENT[0] = name
        t0 = time.monotonic()
        try:
            await fn()
        except Failure as e:
            print("FAIL: %s: %s" % (name, e), flush=True)
            return 1
        except Exception:
            print("FAIL: %s: unexpected exception:\n%s" % (name, traceback.format_exc()),
                  flush=True)
            return 1
        passed += 1
        print("ok - pynsq lookupd: %s (%.2fs)" % (name, time.monotonic() - t0), flush=True)
    print("pynsq %s / tornado %s with %d lookupd(s) and %d nsqd(s): all %d scenarios passed"
          % (nsq.__version__, tornado.version, len(LOOKUPDS), len(NSQDS), passed), flush=True)
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lookupd-http", action="append", required=True,
                    help="nsqlookupd HTTP address host:port (repeatable)")
    ap.add_argument("--nsqd-http", action="append", required=True,
                    help="nsqd HTTP address host:port (repeatable, at least 2)")
    ap.add_argument("--timeout", type=int, default=90, help="overall timeout in seconds")
    args = ap.parse_args()
    if len(args.nsqd_http) < 2:
        ap.error("give at least two --nsqd-http addresses")
    LOOKUPDS.extend(args.lookupd_http)
    NSQDS.extend(args.nsqd_http)

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("nsq").addHandler(ERRORS)
    logging.getLogger("nsq").addHandler(LOOKUPD_QUERIES)

    def on_alarm(signum, frame):
        print("FAIL: overall timeout of %ds hit during scenario: %s" % (args.timeout, CURRENT[0]),
              flush=True)
        os._exit(3)

    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(args.timeout)
    rc = asyncio.run(main_async())
    sys.stdout.flush()
    # exit without waiting for pynsq's periodic lookupd polls and timers
    os._exit(rc)


if __name__ == "__main__":
    main()
