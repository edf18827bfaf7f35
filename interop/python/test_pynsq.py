#!/usr/bin/env python3
"""Interop test: drive an nsqd with the third-party Python client pynsq (nsq.Writer/nsq.Reader)
plus the HTTP API (urllib), asserting delivery semantics and exact /stats counters.

Usage: test_pynsq.py --tcp=127.0.0.1:4150 --http=127.0.0.1:4151
                    [--tls-ca=CA.pem [--tls-cert=C.pem --tls-key=C.key]]

With --tls-ca every Writer and Reader negotiates TLS (tls_v1=True), verifying the server
against that CA and presenting the client certificate when given. With --auth-secret every
Writer and Reader sends AUTH with that secret (for an nsqd with --auth-http-address).

Every scenario uses its own topic, so they only share the server. Synchronisation is by
bounded polling (never a fixed sleep); the only fixed waits are short negative checks
("nothing arrives while paused"). Exits 0 when every scenario passed, non-zero with a
message naming the failed scenario otherwise; the whole run is bounded by --timeout.
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

TCP = None
HTTP = None
# Extra Writer/Reader keyword arguments: TLS when --tls-ca is given, auth_secret when
# --auth-secret is given.
TLS_KW = {}
# (secret, expected identity)
AUTH = ["", ""]
CURRENT = ["startup"]


class Failure(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Failure(msg)


def eq(actual, expected, what):
    if actual != expected:
        raise Failure("%s: expected %r, got %r" % (what, expected, actual))


# --------------------------------------------------------------------------------------------
# client-side error capture: pynsq logs nsqd error frames (E_FIN_FAILED, ...) at ERROR level
# --------------------------------------------------------------------------------------------

class ErrorCollector(logging.Handler):
    def __init__(self):
        super().__init__(level=logging.ERROR)
        self.records = []

    def emit(self, record):
        try:
            msg = record.getMessage()
        except Exception:  # pragma: no cover
            msg = str(record.msg)
        if any(a in msg for a in CLOSE_ARTEFACTS) and \
                any(":%s]" % name in msg for name in CLOSED_READERS):
            return
        self.records.append(msg)


ERRORS = ErrorCollector()
# Readers we closed on purpose: pynsq logs "IntegrityError('failed to unpack size')" for the
# read that was pending when *it* closed the socket; that one is not a server error.
CLOSED_READERS = set()
CLOSE_ARTEFACTS = ("failed to unpack size", "Stream is closed")


def assert_no_client_errors():
    if ERRORS.records:
        errs = list(ERRORS.records)
        ERRORS.records.clear()
        raise Failure("pynsq reported errors from nsqd/connection: %s" % errs)


# --------------------------------------------------------------------------------------------
# HTTP helpers
# --------------------------------------------------------------------------------------------

def http_blocking(method, path, body=None):
    """Returns (status, body bytes, headers dict)."""
    url = "http://%s%s" % (HTTP, path)
    req = urllib.request.Request(url, data=body, method=method)
    req.add_header("Accept", "application/vnd.nsq; version=1.0")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read(), dict(resp.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read(), dict(e.headers)


async def http(method, path, body=None):
    # urllib blocks: run it in a worker thread so pynsq's IOLoop keeps running meanwhile
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, http_blocking, method, path, body)


def q(**params):
    return urllib.parse.urlencode(params)


async def http_ok(method, path, body=None):
    status, data, _ = await http(method, path, body)
    if status != 200:
        raise Failure("%s %s: expected 200, got %d %r" % (method, path, status, data))
    return data


async def http_error(method, path, status, message, body=None):
    st, data, headers = await http(method, path, body)
    eq(st, status, "%s %s status" % (method, path))
    try:
        doc = json.loads(data)
    except ValueError:
        raise Failure("%s %s: error body is not JSON: %r" % (method, path, data))
    eq(doc.get("message"), message, "%s %s error message" % (method, path))


async def stats():
    data = await http_ok("GET", "/stats?format=json")
    return json.loads(data)


async def topic_stats(topic):
    for t in (await stats()).get("topics") or []:
        if t["topic_name"] == topic:
            return t
    return None


async def channel_stats(topic, channel):
    t = await topic_stats(topic)
    if t is None:
        return None
    for c in t.get("channels") or []:
        if c["channel_name"] == channel:
            return c
    return None


async def client_count(topic, channel):
    c = await channel_stats(topic, channel)
    return None if c is None else c["client_count"]


def fields(d, names):
    return {k: d.get(k) for k in names}


CHANNEL_FIELDS = ("depth", "in_flight_count", "deferred_count", "message_count",
                  "requeue_count", "timeout_count", "client_count")


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


async def wait_value(fn, expected, what, timeout=10.0):
    """Polls the async fn() until it returns `expected`."""
    seen = {}

    async def cond():
        seen["v"] = await fn()
        return seen["v"] == expected

    try:
        await wait_for(cond, what, timeout)
    except Failure:
        raise Failure("timed out after %.1fs waiting for %s: expected %r, last %r"
                      % (timeout, what, expected, seen.get("v")))


async def finish_counts(topic, channel):
    c = await channel_stats(topic, channel)
    return sorted(cl["finish_count"] for cl in ((c or {}).get("clients") or []))


async def wait_channel(topic, channel, expected, timeout=10.0):
    """Waits until the channel's stats match every key in `expected` exactly."""
    snapshot = {}

    async def cond():
        c = await channel_stats(topic, channel)
        if c is None:
            snapshot["v"] = None
            return False
        snapshot["v"] = fields(c, expected.keys())
        return snapshot["v"] == expected

    try:
        await wait_for(cond, "channel stats", timeout)
    except Failure:
        raise Failure("channel %s/%s stats: expected %r, last seen %r"
                      % (topic, channel, expected, snapshot.get("v")))
    return await channel_stats(topic, channel)


async def wait_topic(topic, expected, timeout=10.0):
    snapshot = {}

    async def cond():
        t = await topic_stats(topic)
        if t is None:
            snapshot["v"] = None
            return False
        snapshot["v"] = fields(t, expected.keys())
        return snapshot["v"] == expected

    try:
        await wait_for(cond, "topic stats", timeout)
    except Failure:
        raise Failure("topic %s stats: expected %r, last seen %r"
                      % (topic, expected, snapshot.get("v")))
    return await topic_stats(topic)


# --------------------------------------------------------------------------------------------
# pynsq wrappers
# --------------------------------------------------------------------------------------------

WRITERS = [0]


async def make_writer(**conn_kwargs):
    WRITERS[0] += 1
    kwargs = dict(TLS_KW)
    kwargs.update(conn_kwargs)
    w = nsq.Writer([TCP], reconnect_interval=15.0, name="writer%d" % WRITERS[0], **kwargs)
    await wait_for(lambda: any(c.connected() for c in w.conns.values()), "Writer connected")
    return w


def close_writer(w):
    w.connect_to_nsqd = lambda *a, **kw: None  # pynsq would reconnect after 15 s
    CLOSED_READERS.add(w.name)
    for c in list(w.conns.values()):
        c.close()


async def writer_call(w, method, *args):
    """Calls Writer.pub/mpub/dpub and waits for nsqd's response; asserts it is OK."""
    loop = asyncio.get_running_loop()
    fut = loop.create_future()

    def cb(conn, data):
        if not fut.done():
            fut.set_result(data)

    getattr(w, method)(*args, callback=cb)
    try:
        data = await asyncio.wait_for(fut, 10)
    except asyncio.TimeoutError:
        raise Failure("Writer.%s%r: no response from nsqd within 10s" % (method, args))
    if data != b"OK":
        raise Failure("Writer.%s%r: expected OK, got %r" % (method, args, data))


class Consumer(object):
    """An nsq.Reader whose handler is always asynchronous: `on_message(consumer, msg)` decides
    whether to finish, requeue, touch or hold each message."""

    counter = 0

    def __init__(self, topic, channel, on_message, max_in_flight=1, msg_timeout=None,
                 **conn_kwargs):
        Consumer.counter += 1
        self.name = "reader%d" % Consumer.counter
        self.topic = topic
        self.channel = channel
        self.on_message = on_message
        self.received = []  # (body, attempts, id, monotonic time)
        self.outstanding = 0
        self.max_outstanding = 0
        kwargs = dict(
            topic=topic,
            channel=channel,
            message_handler=self._handle,
            nsqd_tcp_addresses=[TCP],
            max_in_flight=max_in_flight,
            name=self.name,
            heartbeat_interval=5,
        )
        if msg_timeout is not None:
            kwargs["msg_timeout"] = msg_timeout
        kwargs.update(TLS_KW)
        kwargs.update(conn_kwargs)
        self.reader = nsq.Reader(**kwargs)

    def _handle(self, msg):
        msg.enable_async()
        self.received.append((msg.body, msg.attempts, msg.id, time.monotonic()))
        self.outstanding += 1
        self.max_outstanding = max(self.max_outstanding, self.outstanding)
        self.on_message(self, msg)
        return None

    def finish(self, msg):
        self.outstanding -= 1
        msg.finish()

    def requeue(self, msg, delay=0):
        self.outstanding -= 1
        msg.requeue(delay=delay, backoff=False)

    def bodies(self):
        return [r[0] for r in self.received]

    def close(self):
        # pynsq reconnects closed connections after 15 s when not using lookupd: prevent it.
        self.reader.connect_to_nsqd = lambda *a, **kw: None
        CLOSED_READERS.add(self.name)
        self.reader.close()


def finish_all(consumer, msg):
    consumer.finish(msg)


async def start_consumers(consumers, topic, channel, timeout=10.0):
    await wait_value(lambda: client_count(topic, channel), len(consumers),
                     "%d subscribers on %s/%s" % (len(consumers), topic, channel), timeout)


async def close_consumers(consumers, topic, channel):
    for c in consumers:
        c.close()
    async def gone():
        return (await client_count(topic, channel)) in (0, None)
    await wait_for(gone, "subscribers on %s/%s to disconnect" % (topic, channel))


# --------------------------------------------------------------------------------------------
# scenarios
# --------------------------------------------------------------------------------------------

async def scenario_publish_all_ways(w):
    """PUB, MPUB, DPUB through pynsq's Writer and /pub, /mpub, /pub?defer over HTTP."""
    topic, ch = "py_pub", "c"
    await http_ok("POST", "/topic/create?" + q(topic=topic))
    await http_ok("POST", "/channel/create?" + q(topic=topic, channel=ch))
    await wait_channel(topic, ch, {"depth": 0, "message_count": 0, "client_count": 0})

    t_pub = time.monotonic()
    await writer_call(w, "pub", topic, b"tcp-pub")
    await writer_call(w, "mpub", topic, [b"tcp-mpub-1", b"tcp-mpub-2", b"tcp-mpub-3"])
    await writer_call(w, "dpub", topic, 1500, b"tcp-dpub")
    eq(await http_ok("POST", "/pub?" + q(topic=topic), b"http-pub"), b"OK", "/pub body")
    eq(await http_ok("POST", "/mpub?" + q(topic=topic), b"http-mpub-1\nhttp-mpub-2\n"), b"OK",
       "/mpub body")
    eq(await http_ok("POST", "/pub?" + q(topic=topic, defer=1500), b"http-dpub"), b"OK",
       "/pub?defer body")

    await wait_topic(topic, {"message_count": 9, "depth": 0})
    await wait_channel(topic, ch, {"depth": 7, "deferred_count": 2, "in_flight_count": 0,
                                   "message_count": 9, "requeue_count": 0,
                                   "timeout_count": 0, "client_count": 0})

    cons = Consumer(topic, ch, finish_all, max_in_flight=4)
    await start_consumers([cons], topic, ch)
    await wait_for(lambda: len(cons.received) >= 9, "9 messages delivered")
    expected = {b"tcp-pub", b"tcp-mpub-1", b"tcp-mpub-2", b"tcp-mpub-3", b"tcp-dpub",
                b"http-pub", b"http-mpub-1", b"http-mpub-2", b"http-dpub"}
    eq(sorted(cons.bodies()), sorted(expected), "bodies received")
    for body, attempts, mid, t in cons.received:
        eq(attempts, 1, "attempts of %r" % body)
        eq(len(mid), 16, "message id length")
        if body in (b"tcp-dpub", b"http-dpub"):
            check(t - t_pub >= 1.4, "deferred %r delivered after %.3fs (< 1.5s defer)"
                  % (body, t - t_pub))
    c = await wait_channel(topic, ch, {"depth": 0, "deferred_count": 0, "in_flight_count": 0,
                                       "message_count": 9, "requeue_count": 0,
                                       "timeout_count": 0, "client_count": 1})
    clients = c.get("clients") or []
    eq(len(clients), 1, "clients listed")
    await wait_value(lambda: finish_counts(topic, ch), [9], "client finish_count")
    cl = (await channel_stats(topic, ch))["clients"][0]
    eq(cl["message_count"], 9, "client message_count")
    eq(cl["requeue_count"], 0, "client requeue_count")
    eq(cl["in_flight_count"], 0, "client in_flight_count")
    await close_consumers([cons], topic, ch)
    assert_no_client_errors()


async def scenario_many_readers_max_in_flight(w):
    """3 readers on one channel, max_in_flight=5 each: every message exactly once, RDY respected."""
    topic, ch = "py_work", "work"
    n = 60
    loop = asyncio.get_running_loop()

    def later_finish(consumer, msg):
        loop.call_later(0.05, consumer.finish, msg)

    consumers = [Consumer(topic, ch, later_finish, max_in_flight=5) for _ in range(3)]
    await start_consumers(consumers, topic, ch)
    for batch in range(3):
        await writer_call(w, "mpub", topic,
                          [("work-%d" % (batch * 20 + i)).encode() for i in range(20)])
    await wait_for(lambda: sum(len(c.received) for c in consumers) >= n, "%d deliveries" % n,
                   timeout=20)
    all_bodies = [b for c in consumers for b in c.bodies()]
    eq(sorted(all_bodies), sorted(("work-%d" % i).encode() for i in range(n)),
       "each message delivered exactly once")
    for c in consumers:
        check(c.max_outstanding <= 5, "reader %s had %d messages in flight (> max_in_flight 5)"
              % (c.reader.name, c.max_outstanding))
    check(max(c.max_outstanding for c in consumers) > 1,
          "no reader ever had more than 1 message in flight (RDY > 1 not honoured?)")
    busy = [c for c in consumers if c.received]
    check(len(busy) >= 2, "only %d of 3 readers received messages" % len(busy))
    await wait_for(lambda: all(c.outstanding == 0 for c in consumers), "all finished")
    st = await wait_channel(topic, ch, {"depth": 0, "in_flight_count": 0, "deferred_count": 0,
                                        "message_count": n, "requeue_count": 0,
                                        "timeout_count": 0, "client_count": 3})
    await wait_value(lambda: finish_counts(topic, ch),
                     sorted(len(c.received) for c in consumers), "per-client finish_count")
    st = await channel_stats(topic, ch)
    eq(sorted(cl["finish_count"] for cl in st["clients"]),
       sorted(len(c.received) for c in consumers), "per-client finish_count")
    eq(sorted(cl["message_count"] for cl in st["clients"]),
       sorted(len(c.received) for c in consumers), "per-client message_count")
    await wait_topic(topic, {"message_count": n, "depth": 0})
    await close_consumers(consumers, topic, ch)
    assert_no_client_errors()


async def scenario_requeue_attempts(w):
    """Requeue once (immediate and deferred); redelivery carries attempts == 2."""
    topic, ch = "py_requeue", "c"

    def handler(consumer, msg):
        if msg.attempts == 1:
            consumer.requeue(msg, delay=1 if msg.body == b"req-delayed" else 0)
        else:
            consumer.finish(msg)

    cons = Consumer(topic, ch, handler, max_in_flight=3)
    await start_consumers([cons], topic, ch)
    bodies = [("req-%d" % i).encode() for i in range(5)] + [b"req-delayed"]
    await writer_call(w, "mpub", topic, bodies[:5])
    await writer_call(w, "pub", topic, bodies[5])
    await wait_for(lambda: len(cons.received) >= 12, "12 deliveries (6 messages x 2)")
    by_body = {}
    for body, attempts, mid, t in cons.received:
        by_body.setdefault(body, []).append((attempts, mid, t))
    eq(sorted(by_body), sorted(bodies), "bodies")
    for body, seen in by_body.items():
        eq([a for a, _, _ in seen], [1, 2], "attempts sequence of %r" % body)
        eq(seen[0][1], seen[1][1], "message id preserved on requeue of %r" % body)
    d = by_body[b"req-delayed"]
    check(d[1][2] - d[0][2] >= 0.9, "REQ with 1000 ms delay redelivered after %.3fs"
          % (d[1][2] - d[0][2]))
    await wait_channel(topic, ch, {"depth": 0, "in_flight_count": 0, "deferred_count": 0,
                                   "message_count": 6, "requeue_count": 6, "timeout_count": 0,
                                   "client_count": 1})
    await wait_value(lambda: finish_counts(topic, ch), [6], "client finish_count")
    cl = (await channel_stats(topic, ch))["clients"][0]
    eq(cl["requeue_count"], 6, "client requeue_count")
    eq(cl["message_count"], 12, "client message_count (deliveries)")
    await close_consumers([cons], topic, ch)
    assert_no_client_errors()


async def scenario_dead_letters(w):
    """nsq-rs policy: max_attempts=3 + dead_letter_topic; a pynsq Reader that requeues
    everything sees each message 3 times, then a Reader on the dead-letter topic gets each
    once, same body, attempts carrying the source's count (3)."""
    topic, ch, dead = "py_dlq", "c", "py_dlq.dead"
    await http_ok("POST", "/topic/create?" + q(topic=topic))
    await http_ok("POST", "/channel/create?" + q(topic=topic, channel=ch))
    data = await http_ok("POST", "/channel/config?" + q(topic=topic, channel=ch),
                         b'{"max_attempts":3,"dead_letter_topic":"py_dlq.dead"}')
    eq(json.loads(data), {"max_attempts": 3, "dead_letter_topic": dead}, "config answer")

    # max_tries=0: pynsq itself must not give up (it would FIN after its own max_tries).
    cons = Consumer(topic, ch, lambda c, m: c.requeue(m), max_in_flight=2, max_tries=0)
    await start_consumers([cons], topic, ch)
    bodies = [b"poison-1", b"poison-2"]
    await writer_call(w, "mpub", topic, bodies)
    await wait_channel(topic, ch, {"depth": 0, "in_flight_count": 0, "dead_lettered_count": 2})
    eq(sorted(cons.bodies()), sorted(bodies * 3), "each delivered max_attempts times")
    eq(sorted(a for _, a, _, _ in cons.received), [1, 1, 2, 2, 3, 3], "attempts")
    await close_consumers([cons], topic, ch)

    dl = Consumer(dead, "inspect", finish_all, max_in_flight=5)
    await start_consumers([dl], dead, "inspect")
    await wait_for(lambda: len(dl.received) >= 2, "both on the dead-letter topic")
    eq(sorted(dl.bodies()), sorted(bodies), "dead-letter bodies")
    eq([a for _, a, _, _ in dl.received], [3, 3], "dead-letter attempts")
    await wait_channel(dead, "inspect", {"depth": 0, "in_flight_count": 0, "message_count": 2})
    await close_consumers([dl], dead, "inspect")
    assert_no_client_errors()


async def scenario_ttl(w):
    """nsq-rs policy: a channel ttl of 300 ms; messages older than that when a pynsq Reader
    would get them are dropped (expired_count), fresh ones are delivered."""
    topic, ch = "py_ttl", "c"
    await http_ok("POST", "/topic/create?" + q(topic=topic))
    await http_ok("POST", "/channel/create?" + q(topic=topic, channel=ch))
    await http_ok("POST", "/channel/config?" + q(topic=topic, channel=ch), b'{"ttl":"300ms"}')
    await writer_call(w, "mpub", topic, [b"old-1", b"old-2", b"old-3"])
    await asyncio.sleep(0.4)  # the fixed wait is the point: let them outlive the ttl
    await writer_call(w, "mpub", topic, [b"new-1", b"new-2"])
    cons = Consumer(topic, ch, finish_all, max_in_flight=10)
    await start_consumers([cons], topic, ch)
    await wait_channel(topic, ch, {"depth": 0, "in_flight_count": 0, "expired_count": 3})
    await wait_for(lambda: len(cons.received) >= 2, "the 2 fresh messages")
    eq(sorted(cons.bodies()), [b"new-1", b"new-2"], "only fresh messages delivered")
    await close_consumers([cons], topic, ch)
    assert_no_client_errors()


async def scenario_dedup(w):
    """nsq-rs policy: a dedup window; a pynsq Writer publishing the same body again (a retry
    after a lost OK) gets OK both times, and a Reader receives it once."""
    topic, ch = "py_dedup", "c"
    await http_ok("POST", "/topic/create?" + q(topic=topic))
    await http_ok("POST", "/channel/create?" + q(topic=topic, channel=ch))
    await http_ok("POST", "/topic/config?" + q(topic=topic), b'{"dedup_window":"10m"}')
    await writer_call(w, "pub", topic, b"job-42")
    await writer_call(w, "pub", topic, b"job-42")
    await writer_call(w, "mpub", topic, [b"job-42", b"job-43"])
    cons = Consumer(topic, ch, finish_all, max_in_flight=10)
    await start_consumers([cons], topic, ch)
    await wait_for(lambda: len(cons.received) >= 2, "the 2 distinct messages")
    await wait_channel(topic, ch, {"depth": 0, "in_flight_count": 0, "message_count": 2})
    eq(sorted(cons.bodies()), [b"job-42", b"job-43"], "each body delivered once")
    t = await topic_stats(topic)
    eq(t.get("deduplicated_count"), 2, "deduplicated_count")
    await close_consumers([cons], topic, ch)
    assert_no_client_errors()


async def scenario_touch(w):
    """msg_timeout=1s; touching every 300 ms keeps a message for 2.5 s without a timeout."""
    topic, ch = "py_touch", "c"
    held = []

    def handler(consumer, msg):
        held.append(msg)

    cons = Consumer(topic, ch, handler, max_in_flight=2, msg_timeout=1)
    await start_consumers([cons], topic, ch)
    await writer_call(w, "pub", topic, b"touch-me")
    await wait_for(lambda: held, "delivery")
    msg = held[0]
    start = time.monotonic()
    while time.monotonic() - start < 2.5:
        msg.touch()
        await asyncio.sleep(0.3)
    eq(len(cons.received), 1, "deliveries while touching (a redelivery means TOUCH failed)")
    await wait_channel(topic, ch, {"in_flight_count": 1, "timeout_count": 0})
    cons.finish(msg)
    await wait_channel(topic, ch, {"depth": 0, "in_flight_count": 0, "deferred_count": 0,
                                   "message_count": 1, "requeue_count": 0, "timeout_count": 0,
                                   "client_count": 1})
    await wait_value(lambda: finish_counts(topic, ch), [1], "client finish_count")
    await close_consumers([cons], topic, ch)
    assert_no_client_errors()


async def scenario_timeout_redelivery(w):
    """An unanswered message times out (msg_timeout=1s from IDENTIFY) and comes back, attempts+1."""
    topic, ch = "py_timeout", "c"

    def handler(consumer, msg):
        if msg.attempts >= 2:
            consumer.finish(msg)
        # attempts == 1: hold it, never answer

    cons = Consumer(topic, ch, handler, max_in_flight=2, msg_timeout=1)
    await start_consumers([cons], topic, ch)
    await writer_call(w, "pub", topic, b"time-me-out")
    await wait_for(lambda: len(cons.received) >= 2, "redelivery after timeout", timeout=10)
    (b1, a1, id1, t1), (b2, a2, id2, t2) = cons.received[:2]
    eq((b1, a1), (b"time-me-out", 1), "first delivery")
    eq((b2, a2), (b"time-me-out", 2), "redelivery")
    eq(id1, id2, "message id of redelivery")
    check(t2 - t1 >= 0.9, "redelivered after %.3fs, before the 1 s msg_timeout" % (t2 - t1))
    await wait_channel(topic, ch, {"depth": 0, "in_flight_count": 0, "deferred_count": 0,
                                   "message_count": 1, "requeue_count": 0, "timeout_count": 1,
                                   "client_count": 1})
    await close_consumers([cons], topic, ch)
    eq(len(cons.received), 2, "deliveries")
    assert_no_client_errors()


async def scenario_fanout(w):
    """Every channel gets a copy of every message."""
    topic = "py_fanout"
    chans = ["alpha", "beta"]
    cons = {c: Consumer(topic, c, finish_all, max_in_flight=10) for c in chans}
    for c in chans:
        await start_consumers([cons[c]], topic, c)
    await writer_call(w, "mpub", topic, [("fan-%d" % i).encode() for i in range(10)])
    await writer_call(w, "pub", topic, b"fan-10")
    expected = sorted(("fan-%d" % i).encode() for i in range(11))
    for c in chans:
        await wait_for(lambda c=c: len(cons[c].received) >= 11, "11 deliveries on %s" % c)
    for c in chans:
        eq(sorted(cons[c].bodies()), expected, "bodies on channel %s" % c)
        await wait_channel(topic, c, {"depth": 0, "in_flight_count": 0, "message_count": 11,
                                      "requeue_count": 0, "timeout_count": 0,
                                      "client_count": 1})
    await wait_topic(topic, {"message_count": 11, "depth": 0})
    for c in chans:
        await close_consumers([cons[c]], topic, c)
    assert_no_client_errors()


async def scenario_ephemeral(w):
    """An #ephemeral channel disappears when its last client disconnects."""
    topic, ch = "py_eph", "tmp#ephemeral"
    cons = Consumer(topic, ch, finish_all, max_in_flight=3)
    await start_consumers([cons], topic, ch)
    await writer_call(w, "mpub", topic, [b"e1", b"e2", b"e3"])
    await wait_for(lambda: len(cons.received) >= 3, "3 deliveries")
    eq(sorted(cons.bodies()), [b"e1", b"e2", b"e3"], "bodies")
    await wait_channel(topic, ch, {"depth": 0, "in_flight_count": 0, "message_count": 3,
                                   "client_count": 1})
    cons.close()
    await wait_value(lambda: channel_stats(topic, ch), None,
                     "ephemeral channel removed after its last client left")
    check((await topic_stats(topic)) is not None, "non-ephemeral topic must survive")
    assert_no_client_errors()


async def scenario_pause(w):
    """Paused topic keeps messages at the topic; paused channel stops delivery."""
    topic, ch = "py_pause", "c"
    cons = Consumer(topic, ch, finish_all, max_in_flight=5)
    await start_consumers([cons], topic, ch)

    await http_ok("POST", "/topic/pause?" + q(topic=topic))
    await wait_topic(topic, {"paused": True})
    eq(await http_ok("POST", "/mpub?" + q(topic=topic), b"tp1\ntp2\ntp3"), b"OK", "/mpub")
    await wait_topic(topic, {"depth": 3, "message_count": 3})
    await asyncio.sleep(0.3)  # negative check: nothing may move while the topic is paused
    eq(len(cons.received), 0, "deliveries while topic paused")
    await wait_topic(topic, {"depth": 3, "paused": True})
    await wait_channel(topic, ch, {"message_count": 0, "depth": 0})

    await http_ok("POST", "/topic/unpause?" + q(topic=topic))
    await wait_for(lambda: len(cons.received) >= 3, "deliveries after topic unpause")
    await wait_topic(topic, {"depth": 0, "paused": False})

    await http_ok("POST", "/channel/pause?" + q(topic=topic, channel=ch))
    await wait_channel(topic, ch, {"paused": True})
    await writer_call(w, "mpub", topic, [b"cp1", b"cp2"])
    await wait_channel(topic, ch, {"depth": 2, "message_count": 5, "in_flight_count": 0})
    await asyncio.sleep(0.3)  # negative check
    eq(len(cons.received), 3, "deliveries while channel paused")
    await wait_channel(topic, ch, {"depth": 2, "paused": True})

    await http_ok("POST", "/channel/unpause?" + q(topic=topic, channel=ch))
    await wait_for(lambda: len(cons.received) >= 5, "deliveries after channel unpause")
    eq(sorted(cons.bodies()), [b"cp1", b"cp2", b"tp1", b"tp2", b"tp3"], "bodies")
    await wait_channel(topic, ch, {"depth": 0, "in_flight_count": 0, "message_count": 5,
                                   "paused": False, "client_count": 1})
    await close_consumers([cons], topic, ch)
    assert_no_client_errors()


async def scenario_empty(w):
    """/channel/empty drops queued and deferred messages; /topic/empty drains a topic."""
    topic, ch = "py_empty", "c"
    await http_ok("POST", "/topic/create?" + q(topic=topic))
    await http_ok("POST", "/channel/create?" + q(topic=topic, channel=ch))
    eq(await http_ok("POST", "/mpub?" + q(topic=topic), b"x1\nx2\nx3\nx4\nx5"), b"OK", "/mpub")
    await writer_call(w, "dpub", topic, 60000, b"x-deferred")
    await wait_channel(topic, ch, {"depth": 5, "deferred_count": 1, "message_count": 6})
    await http_ok("POST", "/channel/empty?" + q(topic=topic, channel=ch))
    await wait_channel(topic, ch, {"depth": 0, "deferred_count": 0, "in_flight_count": 0,
                                   "message_count": 6})

    # nothing must be delivered from the emptied channel
    cons = Consumer(topic, ch, finish_all, max_in_flight=5)
    await start_consumers([cons], topic, ch)
    await writer_call(w, "pub", topic, b"after-empty")
    await wait_for(lambda: cons.received, "delivery after empty")
    eq(cons.bodies(), [b"after-empty"], "bodies after /channel/empty")
    await close_consumers([cons], topic, ch)

    t2 = "py_topic_empty"
    await http_ok("POST", "/topic/create?" + q(topic=t2))
    eq(await http_ok("POST", "/mpub?" + q(topic=t2), b"y1\ny2\ny3\ny4"), b"OK", "/mpub")
    await wait_topic(t2, {"depth": 4, "message_count": 4})
    await http_ok("POST", "/topic/empty?" + q(topic=t2))
    await wait_topic(t2, {"depth": 0})
    assert_no_client_errors()


async def scenario_delete(w):
    """/channel/delete and /topic/delete remove them from /stats; deleting again is a 404."""
    topic, ch = "py_delete", "c"
    await http_ok("POST", "/topic/create?" + q(topic=topic))
    await http_ok("POST", "/channel/create?" + q(topic=topic, channel=ch))
    await http_ok("POST", "/channel/create?" + q(topic=topic, channel="other"))
    await writer_call(w, "mpub", topic, [b"d1", b"d2"])
    await wait_channel(topic, ch, {"depth": 2, "message_count": 2})
    await http_ok("POST", "/channel/delete?" + q(topic=topic, channel=ch))
    await wait_value(lambda: channel_stats(topic, ch), None, "channel removed")
    await http_error("POST", "/channel/delete?" + q(topic=topic, channel=ch), 404, "CHANNEL_NOT_FOUND")
    await wait_channel(topic, "other", {"depth": 2, "message_count": 2})
    await http_ok("POST", "/topic/delete?" + q(topic=topic))
    await wait_value(lambda: topic_stats(topic), None, "topic removed")
    await http_error("POST", "/topic/delete?" + q(topic=topic), 404, "TOPIC_NOT_FOUND")
    await http_error("POST", "/topic/delete", 400, "MISSING_ARG_TOPIC")
    await http_error("POST", "/pub", 400, "MISSING_ARG_TOPIC", body=b"x")

    # a deleted topic can be re-created empty through the TCP protocol
    await writer_call(w, "pub", topic, b"reborn")
    await wait_topic(topic, {"depth": 1, "message_count": 1})
    eq((await topic_stats(topic)).get("channels") or [], [], "channels of the re-created topic")
    assert_no_client_errors()


async def scenario_compression_deflate(_w):
    """IDENTIFY deflate=true: raw DEFLATE streams both ways (Writer and Reader)."""
    topic, ch = "py_deflate", "c"
    wz = await make_writer(deflate=True, deflate_level=6)
    cons = Consumer(topic, ch, finish_all, max_in_flight=10, deflate=True, deflate_level=6)
    await start_consumers([cons], topic, ch)
    bodies = [(("deflate-%d-" % i) * 40).encode() for i in range(20)]
    await writer_call(wz, "mpub", topic, bodies[:10])
    for b in bodies[10:]:
        await writer_call(wz, "pub", topic, b)
    await wait_for(lambda: len(cons.received) >= 20, "20 deliveries over deflate")
    eq(sorted(cons.bodies()), sorted(bodies), "bodies over deflate")
    st = await wait_channel(topic, ch, {"depth": 0, "in_flight_count": 0, "message_count": 20,
                                        "client_count": 1})
    eq(st["clients"][0].get("deflate"), True, "reader's /stats client entry deflate")
    producers = (await stats()).get("producers") or []
    check(any(p.get("deflate") for p in producers),
          "no producer with deflate=true in /stats producers: %r" % producers)
    await close_consumers([cons], topic, ch)
    close_writer(wz)
    assert_no_client_errors()


async def scenario_auth(_w):
    """Writer and Reader with auth_secret (requires --auth-secret and --auth-identity)."""
    check(AUTH[0], "scenario_auth needs --auth-secret")
    topic, ch = "pub_auth", "ok_c"
    wa = await make_writer()
    cons = Consumer(topic, ch, finish_all, max_in_flight=5)
    await start_consumers([cons], topic, ch)
    bodies = [("auth-%d" % i).encode() for i in range(6)]
    await writer_call(wa, "mpub", topic, bodies[:3])
    for b in bodies[3:]:
        await writer_call(wa, "pub", topic, b)
    await wait_for(lambda: len(cons.received) >= 6, "6 deliveries with AUTH")
    eq(sorted(cons.bodies()), sorted(bodies), "bodies with AUTH")
    st = await wait_channel(topic, ch, {"depth": 0, "in_flight_count": 0, "message_count": 6,
                                        "client_count": 1})
    client = st["clients"][0]
    eq(client.get("authed"), True, "reader's /stats authed")
    eq(client.get("auth_identity"), AUTH[1], "reader's /stats auth_identity")
    await close_consumers([cons], topic, ch)
    close_writer(wa)
    assert_no_client_errors()


async def scenario_tls_pub_sub(_w):
    """Writer and Reader over TLS (requires --tls-ca): pub/mpub delivered, /stats says TLS."""
    check("tls_v1" in TLS_KW, "scenario_tls_pub_sub needs --tls-ca")
    topic, ch = "py_tls", "c"
    wt = await make_writer()
    cons = Consumer(topic, ch, finish_all, max_in_flight=10)
    await start_consumers([cons], topic, ch)
    bodies = [("tls-%d" % i).encode() for i in range(10)]
    await writer_call(wt, "mpub", topic, bodies[:5])
    for b in bodies[5:]:
        await writer_call(wt, "pub", topic, b)
    await wait_for(lambda: len(cons.received) >= 10, "10 deliveries over TLS")
    eq(sorted(cons.bodies()), sorted(bodies), "bodies over TLS")
    st = await wait_channel(topic, ch, {"depth": 0, "in_flight_count": 0, "message_count": 10,
                                        "client_count": 1})
    client = st["clients"][0]
    eq(client.get("tls"), True, "reader's /stats client entry tls")
    # pynsq asks for ssl.PROTOCOL_TLSv1_2.
    eq(client.get("tls_version"), "TLS1.2", "reader's tls_version")
    check(client.get("tls_cipher_suite", "").startswith("TLS_"),
          "tls_cipher_suite %r" % client.get("tls_cipher_suite"))
    producers = (await stats()).get("producers") or []
    check(any(p.get("tls") for p in producers),
          "no producer with tls=true in /stats producers: %r" % producers)
    await close_consumers([cons], topic, ch)
    close_writer(wt)
    assert_no_client_errors()


SCENARIOS = [
    ("publish: Writer pub/mpub/dpub + HTTP /pub /mpub /pub?defer, stats exact",
     scenario_publish_all_ways),
    ("3 readers, max_in_flight=5: exactly-once, RDY window, per-client counters",
     scenario_many_readers_max_in_flight),
    ("requeue (immediate + 1s deferred): attempts 1 -> 2, requeue_count", scenario_requeue_attempts),
    ("dead letters (nsq-rs policy): max_attempts then once on the dead-letter topic",
     scenario_dead_letters),
    ("ttl (nsq-rs policy): messages older than the ttl are dropped, fresh ones delivered",
     scenario_ttl),
    ("dedup window (nsq-rs policy): a repeated publish is OK and delivered once",
     scenario_dedup),
    ("touch keeps a message past msg_timeout", scenario_touch),
    ("timeout redelivery with attempts+1, timeout_count", scenario_timeout_redelivery),
    ("fan-out to 2 channels", scenario_fanout),
    ("#ephemeral channel removed after last client", scenario_ephemeral),
    ("topic pause/unpause and channel pause/unpause", scenario_pause),
    ("channel empty (queued + deferred), topic empty", scenario_empty),
    ("channel/topic delete and 404s", scenario_delete),
    ("compression: deflate (Writer + Reader)", scenario_compression_deflate),
    ("TLS: Writer + Reader, /stats tls fields", scenario_tls_pub_sub),
    ("AUTH: Writer + Reader with auth_secret, /stats auth fields", scenario_auth),
]


async def main_async(only, skip):
    w = await make_writer()
    passed = 0
    for name, fn in SCENARIOS:
        if only and only not in fn.__name__:
            continue
        if skip and skip in fn.__name__:
            continue
        if fn is scenario_tls_pub_sub and "tls_v1" not in TLS_KW:
            continue  # needs a server certificate to trust: run with --tls-ca
        if fn is scenario_auth and not AUTH[0]:
            continue  # needs an nsqd with an auth server: run with --auth-secret
        CURRENT[0] = name
        t0 = time.monotonic()
        try:
            await fn(w)
        except Failure as e:
            print("FAIL: %s: %s" % (name, e), flush=True)
            return 1
        except Exception:
            print("FAIL: %s: unexpected exception:\n%s" % (name, traceback.format_exc()),
                  flush=True)
            return 1
        passed += 1
        print("ok - pynsq: %s (%.2fs)" % (name, time.monotonic() - t0), flush=True)
    close_writer(w)
    print("pynsq %s / tornado %s: all %d scenarios passed" % (nsq.__version__, tornado.version,
                                                              passed), flush=True)
    return 0


def main():
    global TCP, HTTP
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tcp", required=True, help="nsqd TCP address host:port")
    ap.add_argument("--http", required=True, help="nsqd HTTP address host:port")
    ap.add_argument("--timeout", type=int, default=90, help="overall timeout in seconds")
    ap.add_argument("--only", default="", help="run only scenarios whose function name "
                                               "contains this")
    ap.add_argument("--skip", default="", help="skip scenarios whose function name contains this")
    ap.add_argument("--tls-ca", default="", help="negotiate TLS, trusting this CA (PEM)")
    ap.add_argument("--tls-cert", default="", help="client certificate (PEM) for TLS")
    ap.add_argument("--tls-key", default="", help="client key (PEM) for TLS")
    ap.add_argument("--auth-secret", default="", help="send AUTH with this secret")
    ap.add_argument("--auth-identity", default="", help="identity the auth server grants")
    args = ap.parse_args()
    TCP, HTTP = args.tcp, args.http
    if args.tls_ca:
        opts = {"ca_certs": args.tls_ca}
        if args.tls_cert:
            opts.update(certfile=args.tls_cert, keyfile=args.tls_key)
        TLS_KW.update(tls_v1=True, tls_options=opts)
    if args.auth_secret:
        AUTH[:] = [args.auth_secret, args.auth_identity]
        TLS_KW.update(auth_secret=args.auth_secret)

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("nsq").addHandler(ERRORS)

    def on_alarm(signum, frame):
        print("FAIL: overall timeout of %ds hit during scenario: %s" % (args.timeout, CURRENT[0]),
              flush=True)
        os._exit(3)

    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(args.timeout)
    rc = asyncio.run(main_async(args.only, args.skip))
    sys.stdout.flush()
    # exit without waiting for pynsq's pending reconnect timers
    os._exit(rc)


if __name__ == "__main__":
    main()
