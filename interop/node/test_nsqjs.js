#!/usr/bin/env node
// Interop test: drive an nsqd with the third-party Node.js client nsqjs (Writer/Reader) plus
// the HTTP API, asserting delivery semantics and exact /stats counters.
//
// Usage: node test_nsqjs.js --tcp=127.0.0.1:4150 --http=127.0.0.1:4151 [--timeout=90]
//          [--only=NAME] [--skip=NAME]   (substring of the scenario function name)
//          [--tlsca=CA.pem]              (every Writer/Reader negotiates TLS, verifying the
//                                         server against this CA; /stats must say tls=true)
//
// Every scenario uses its own topic. Synchronisation is by bounded polling (never a fixed
// sleep); the only fixed waits are short negative checks. Exits 0 when every scenario passed,
// non-zero with a message naming the failed scenario otherwise; the run is bounded by --timeout.
'use strict'

const fs = require('fs')
const nsq = require('nsqjs')
const nsqjsVersion = require('nsqjs/package.json').version

function parseArgs() {
  const out = {timeout: 90, only: '', skip: ''}
  for (const a of process.argv.slice(2)) {
    const m = /^--([a-z]+)=(.*)$/.exec(a)
    if (!m) throw new Error(`bad argument ${a}`)
    out[m[1]] = m[2]
  }
  if (!out.tcp || !out.http) {
    console.error('usage: node test_nsqjs.js --tcp=HOST:PORT --http=HOST:PORT')
    process.exit(2)
  }
  out.timeout = Number(out.timeout)
  return out
}

const ARGS = parseArgs()
const [TCP_HOST, TCP_PORT] = [
  ARGS.tcp.slice(0, ARGS.tcp.lastIndexOf(':')),
  Number(ARGS.tcp.slice(ARGS.tcp.lastIndexOf(':') + 1)),
]
// With --tlsca, every connection upgrades to TLS (nsqjs verifies the server certificate).
const TLS = ARGS.tlsca ? {tls: true, tlsVerification: true, ca: fs.readFileSync(ARGS.tlsca)} : null
let CURRENT = 'startup'
const CLIENT_ERRORS = []

class Failure extends Error {}

function check(cond, msg) {
  if (!cond) throw new Failure(msg)
}

function eq(actual, expected, what) {
  const a = JSON.stringify(actual)
  const e = JSON.stringify(expected)
  if (a !== e) throw new Failure(`${what}: expected ${e}, got ${a}`)
}

function assertNoClientErrors() {
  if (CLIENT_ERRORS.length) {
    const errs = CLIENT_ERRORS.splice(0)
    throw new Failure(`nsqjs reported errors: ${errs.join('; ')}`)
  }
}

const now = () => Date.now()
const tick = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

// ------------------------------------------------------------------------------------------
// HTTP helpers
// ------------------------------------------------------------------------------------------

async function http(method, path, body) {
  const ctl = new AbortController()
  const timer = setTimeout(() => ctl.abort(), 10000)
  try {
    const res = await fetch(`http://${ARGS.http}${path}`, {
      method,
      body,
      headers: {Accept: 'application/vnd.nsq; version=1.0', Connection: 'close'},
      signal: ctl.signal,
    })
    const text = await res.text()
    return {status: res.status, text, headers: res.headers}
  } catch (err) {
    throw new Failure(`${method} ${path}: ${err}`)
  } finally {
    clearTimeout(timer)
  }
}

const q = (params) => new URLSearchParams(params).toString()

async function httpOk(method, path, body) {
  const r = await http(method, path, body)
  if (r.status !== 200) throw new Failure(`${method} ${path}: expected 200, got ${r.status} ${r.text}`)
  return r.text
}

async function stats() {
  return JSON.parse(await httpOk('GET', '/stats?format=json'))
}

async function topicStats(topic) {
  const s = await stats()
  return (s.topics || []).find((t) => t.topic_name === topic) || null
}

async function channelStats(topic, channel) {
  const t = await topicStats(topic)
  if (!t) return null
  return (t.channels || []).find((c) => c.channel_name === channel) || null
}

async function clientCount(topic, channel) {
  const c = await channelStats(topic, channel)
  return c ? c.client_count : null
}

function pick(obj, keys) {
  const out = {}
  for (const k of keys) out[k] = obj[k]
  return out
}

async function waitFor(cond, what, timeoutMs = 10000) {
  const deadline = now() + timeoutMs
  let last
  for (;;) {
    try {
      last = await cond()
      if (last) return last
    } catch (err) {
      if (!(err instanceof Failure)) throw err
      last = err.message
    }
    if (now() >= deadline) {
      throw new Failure(`timed out after ${timeoutMs} ms waiting for ${what} (last: ${JSON.stringify(last)})`)
    }
    await tick(20)
  }
}

async function waitChannel(topic, channel, expected, timeoutMs = 10000) {
  let seen = null
  try {
    await waitFor(async () => {
      const c = await channelStats(topic, channel)
      seen = c && pick(c, Object.keys(expected))
      return c && JSON.stringify(seen) === JSON.stringify(expected)
    }, 'channel stats', timeoutMs)
  } catch (err) {
    throw new Failure(`channel ${topic}/${channel} stats: expected ${JSON.stringify(expected)}, last seen ${JSON.stringify(seen)}`)
  }
  return channelStats(topic, channel)
}

async function waitTopic(topic, expected, timeoutMs = 10000) {
  let seen = null
  try {
    await waitFor(async () => {
      const t = await topicStats(topic)
      seen = t && pick(t, Object.keys(expected))
      return t && JSON.stringify(seen) === JSON.stringify(expected)
    }, 'topic stats', timeoutMs)
  } catch (err) {
    throw new Failure(`topic ${topic} stats: expected ${JSON.stringify(expected)}, last seen ${JSON.stringify(seen)}`)
  }
  return topicStats(topic)
}

// ------------------------------------------------------------------------------------------
// nsqjs wrappers
// ------------------------------------------------------------------------------------------

async function makeWriter(options = {}) {
  const w = new nsq.Writer(TCP_HOST, TCP_PORT, {...(TLS || {}), ...options})
  w.on(nsq.Writer.ERROR, (err) => CLIENT_ERRORS.push(`writer: ${err}`))
  const ready = new Promise((resolve) => w.once(nsq.Writer.READY, resolve))
  w.connect()
  await Promise.race([
    ready,
    tick(10000).then(() => {
      throw new Failure('Writer did not become ready within 10s')
    }),
  ])
  return w
}

function withTimeout(promise, ms, what) {
  let timer
  return Promise.race([
    promise,
    new Promise((resolve, reject) => {
      timer = setTimeout(() => reject(new Failure(`${what}: no response within ${ms} ms`)), ms)
    }),
  ]).finally(() => clearTimeout(timer))
}

// Writer.publish(topic, string|array) -> PUB or MPUB; resolves on OK.
function publish(w, topic, msgs) {
  return withTimeout(
    new Promise((resolve, reject) => {
      w.publish(topic, msgs, (err) => (err ? reject(new Failure(`publish ${topic}: ${err}`)) : resolve()))
    }),
    10000,
    `publish ${topic}`
  )
}

// Writer.deferPublish -> DPUB. nsqjs 0.13.0 quirk: deferPublish hands its message straight to
// produceMessages, which throws unless it is an array, so pass a one-element array (that is
// what produces a DPUB; a longer array throws "DPUB can only defer one message at a time").
function deferPublish(w, topic, msg, ms) {
  return withTimeout(
    new Promise((resolve, reject) => {
      w.deferPublish(topic, [msg], ms, (err) =>
        err ? reject(new Failure(`deferPublish ${topic}: ${err}`)) : resolve()
      )
    }),
    10000,
    `deferPublish ${topic}`
  )
}

class Consumer {
  constructor(topic, channel, onMessage, opts = {}) {
    this.topic = topic
    this.channel = channel
    this.received = [] // {body, attempts, id, t}
    this.outstanding = 0
    this.maxOutstanding = 0
    const options = {
      nsqdTCPAddresses: [ARGS.tcp],
      maxInFlight: opts.maxInFlight || 1,
      heartbeatInterval: 5,
      lookupdPollInterval: 60,
    }
    if (opts.messageTimeout) options.messageTimeout = opts.messageTimeout
    if (opts.snappy) options.snappy = true
    if (opts.deflate) options.deflate = true
    if (TLS) Object.assign(options, TLS)
    this.reader = new nsq.Reader(topic, channel, options)
    this.reader.on(nsq.Reader.ERROR, (err) => CLIENT_ERRORS.push(`reader ${topic}/${channel}: ${err}`))
    this.reader.on(nsq.Reader.MESSAGE, (msg) => {
      this.received.push({body: msg.body.toString(), attempts: msg.attempts, id: msg.id, t: now()})
      this.outstanding += 1
      this.maxOutstanding = Math.max(this.maxOutstanding, this.outstanding)
      onMessage(this, msg)
    })
    this.reader.connect()
  }

  finish(msg) {
    this.outstanding -= 1
    msg.finish()
  }

  requeue(msg, delayMs) {
    this.outstanding -= 1
    msg.requeue(delayMs, false)
  }

  bodies() {
    return this.received.map((r) => r.body)
  }

  close() {
    this.reader.close()
  }
}

const finishAll = (c, msg) => c.finish(msg)

async function waitSubscribers(topic, channel, n) {
  await waitFor(async () => (await clientCount(topic, channel)) === n, `${n} subscribers on ${topic}/${channel}`)
}

async function closeConsumers(consumers, topic, channel) {
  for (const c of consumers) c.close()
  await waitFor(async () => {
    const n = await clientCount(topic, channel)
    return n === 0 || n === null
  }, `subscribers of ${topic}/${channel} to disconnect`)
}

const sorted = (a) => [...a].sort()

// ------------------------------------------------------------------------------------------
// scenarios
// ------------------------------------------------------------------------------------------

async function scenarioPublish(w) {
  const topic = 'js_pub'
  const ch = 'c'
  await httpOk('POST', `/topic/create?${q({topic})}`)
  await httpOk('POST', `/channel/create?${q({topic, channel: ch})}`)
  await waitChannel(topic, ch, {depth: 0, message_count: 0, client_count: 0})

  const t0 = now()
  await publish(w, topic, 'tcp-pub') // PUB
  await publish(w, topic, ['tcp-mpub-1', 'tcp-mpub-2', 'tcp-mpub-3']) // MPUB
  await publish(w, topic, Buffer.from('tcp-buffer')) // PUB with a Buffer
  await deferPublish(w, topic, 'tcp-dpub', 1500) // DPUB
  eq(await httpOk('POST', `/pub?${q({topic})}`, 'http-pub'), 'OK', '/pub body')
  eq(await httpOk('POST', `/mpub?${q({topic})}`, 'http-mpub-1\nhttp-mpub-2\n'), 'OK', '/mpub body')
  eq(await httpOk('POST', `/pub?${q({topic, defer: 1500})}`, 'http-dpub'), 'OK', '/pub?defer body')

  await waitTopic(topic, {message_count: 10, depth: 0})
  await waitChannel(topic, ch, {
    depth: 8, deferred_count: 2, in_flight_count: 0, message_count: 10,
    requeue_count: 0, timeout_count: 0, client_count: 0,
  })

  const c = new Consumer(topic, ch, finishAll, {maxInFlight: 4})
  await waitSubscribers(topic, ch, 1)
  await waitFor(() => c.received.length >= 10, '10 deliveries')
  eq(sorted(c.bodies()), sorted([
    'tcp-pub', 'tcp-mpub-1', 'tcp-mpub-2', 'tcp-mpub-3', 'tcp-buffer', 'tcp-dpub',
    'http-pub', 'http-mpub-1', 'http-mpub-2', 'http-dpub',
  ]), 'bodies received')
  for (const r of c.received) {
    eq(r.attempts, 1, `attempts of ${r.body}`)
    eq(String(r.id).length, 16, 'message id length')
    if (r.body.endsWith('dpub')) {
      check(r.t - t0 >= 1400, `deferred ${r.body} delivered after ${r.t - t0} ms (< 1500 ms defer)`)
    }
  }
  await waitChannel(topic, ch, {
    depth: 0, deferred_count: 0, in_flight_count: 0, message_count: 10,
    requeue_count: 0, timeout_count: 0, client_count: 1,
  })
  await waitFor(async () => (await channelStats(topic, ch)).clients[0].finish_count === 10, 'client finish_count == 10')
  const cl = (await channelStats(topic, ch)).clients[0]
  eq(pick(cl, ['message_count', 'requeue_count', 'in_flight_count']),
    {message_count: 10, requeue_count: 0, in_flight_count: 0}, 'client counters')
  await closeConsumers([c], topic, ch)
  assertNoClientErrors()
}

async function scenarioManyReaders(w) {
  const topic = 'js_work'
  const ch = 'work'
  const n = 60
  const laterFinish = (c, msg) => setTimeout(() => c.finish(msg), 50)
  const consumers = [0, 1, 2].map(() => new Consumer(topic, ch, laterFinish, {maxInFlight: 5}))
  await waitSubscribers(topic, ch, 3)
  for (let b = 0; b < 3; b++) {
    const batch = []
    for (let i = 0; i < 20; i++) batch.push(`work-${b * 20 + i}`)
    await publish(w, topic, batch)
  }
  await waitFor(() => consumers.reduce((s, c) => s + c.received.length, 0) >= n, `${n} deliveries`, 20000)
  const all = consumers.flatMap((c) => c.bodies())
  const expected = []
  for (let i = 0; i < n; i++) expected.push(`work-${i}`)
  eq(sorted(all), sorted(expected), 'each message delivered exactly once')
  for (const c of consumers) {
    check(c.maxOutstanding <= 5, `a reader had ${c.maxOutstanding} messages in flight (> maxInFlight 5)`)
  }
  check(Math.max(...consumers.map((c) => c.maxOutstanding)) > 1,
    'no reader ever had more than 1 message in flight (RDY > 1 not honoured?)')
  const busy = consumers.filter((c) => c.received.length > 0).length
  check(busy >= 2, `only ${busy} of 3 readers received messages`)
  await waitFor(() => consumers.every((c) => c.outstanding === 0), 'all finished')
  await waitChannel(topic, ch, {
    depth: 0, in_flight_count: 0, deferred_count: 0, message_count: n,
    requeue_count: 0, timeout_count: 0, client_count: 3,
  })
  await waitFor(async () => (await channelStats(topic, ch)).clients.reduce((s, cl) => s + cl.finish_count, 0) === n,
    `sum of client finish_count == ${n}`)
  const st = await channelStats(topic, ch)
  const num = (a) => [...a].sort((x, y) => x - y)
  eq(num(st.clients.map((cl) => cl.finish_count)), num(consumers.map((c) => c.received.length)), 'per-client finish_count')
  eq(num(st.clients.map((cl) => cl.message_count)), num(consumers.map((c) => c.received.length)), 'per-client message_count')
  await waitTopic(topic, {message_count: n, depth: 0})
  await closeConsumers(consumers, topic, ch)
  assertNoClientErrors()
}

async function scenarioRequeue(w) {
  const topic = 'js_requeue'
  const ch = 'c'
  const handler = (c, msg) => {
    if (msg.attempts === 1) c.requeue(msg, msg.body.toString() === 'req-delayed' ? 1000 : 0)
    else c.finish(msg)
  }
  const c = new Consumer(topic, ch, handler, {maxInFlight: 3})
  await waitSubscribers(topic, ch, 1)
  const bodies = ['req-0', 'req-1', 'req-2', 'req-3', 'req-4', 'req-delayed']
  await publish(w, topic, bodies.slice(0, 5))
  await publish(w, topic, bodies[5])
  await waitFor(() => c.received.length >= 12, '12 deliveries (6 messages x 2)')
  const byBody = {}
  for (const r of c.received) (byBody[r.body] = byBody[r.body] || []).push(r)
  eq(sorted(Object.keys(byBody)), sorted(bodies), 'bodies')
  for (const [body, seen] of Object.entries(byBody)) {
    eq(seen.map((r) => r.attempts), [1, 2], `attempts sequence of ${body}`)
    eq(seen[1].id, seen[0].id, `message id preserved on requeue of ${body}`)
  }
  const d = byBody['req-delayed']
  check(d[1].t - d[0].t >= 900, `REQ with 1000 ms delay redelivered after ${d[1].t - d[0].t} ms`)
  await waitChannel(topic, ch, {
    depth: 0, in_flight_count: 0, deferred_count: 0, message_count: 6,
    requeue_count: 6, timeout_count: 0, client_count: 1,
  })
  await waitFor(async () => (await channelStats(topic, ch)).clients[0].finish_count === 6, 'client finish_count == 6')
  const cl = (await channelStats(topic, ch)).clients[0]
  eq(pick(cl, ['requeue_count', 'message_count']), {requeue_count: 6, message_count: 12}, 'client counters')
  await closeConsumers([c], topic, ch)
  assertNoClientErrors()
}

async function scenarioTouch(w) {
  const topic = 'js_touch'
  const ch = 'c'
  const held = []
  const c = new Consumer(topic, ch, (cons, msg) => held.push(msg), {maxInFlight: 2, messageTimeout: 1000})
  await waitSubscribers(topic, ch, 1)
  await publish(w, topic, 'touch-me')
  await waitFor(() => held.length > 0, 'delivery')
  const msg = held[0]
  const start = now()
  while (now() - start < 2500) {
    msg.touch()
    await tick(300)
  }
  eq(c.received.length, 1, 'deliveries while touching (a redelivery means TOUCH failed)')
  await waitChannel(topic, ch, {in_flight_count: 1, timeout_count: 0})
  c.finish(msg)
  await waitChannel(topic, ch, {
    depth: 0, in_flight_count: 0, deferred_count: 0, message_count: 1,
    requeue_count: 0, timeout_count: 0, client_count: 1,
  })
  await waitFor(async () => (await channelStats(topic, ch)).clients[0].finish_count === 1, 'client finish_count == 1')
  await closeConsumers([c], topic, ch)
  assertNoClientErrors()
}

async function scenarioTimeout(w) {
  const topic = 'js_timeout'
  const ch = 'c'
  const handler = (cons, msg) => {
    if (msg.attempts >= 2) cons.finish(msg)
    // attempts == 1: hold it, never answer
  }
  const c = new Consumer(topic, ch, handler, {maxInFlight: 2, messageTimeout: 1000})
  await waitSubscribers(topic, ch, 1)
  await publish(w, topic, 'time-me-out')
  await waitFor(() => c.received.length >= 2, 'redelivery after timeout')
  const [r1, r2] = c.received
  eq([r1.body, r1.attempts], ['time-me-out', 1], 'first delivery')
  eq([r2.body, r2.attempts], ['time-me-out', 2], 'redelivery')
  eq(r2.id, r1.id, 'message id of redelivery')
  check(r2.t - r1.t >= 900, `redelivered after ${r2.t - r1.t} ms, before the 1000 ms msg_timeout`)
  await waitChannel(topic, ch, {
    depth: 0, in_flight_count: 0, deferred_count: 0, message_count: 1,
    requeue_count: 0, timeout_count: 1, client_count: 1,
  })
  await closeConsumers([c], topic, ch)
  eq(c.received.length, 2, 'deliveries')
  assertNoClientErrors()
}

async function scenarioFanout(w) {
  const topic = 'js_fanout'
  const chans = ['alpha', 'beta']
  const cons = {}
  for (const ch of chans) {
    cons[ch] = new Consumer(topic, ch, finishAll, {maxInFlight: 10})
    await waitSubscribers(topic, ch, 1)
  }
  const batch = []
  for (let i = 0; i < 10; i++) batch.push(`fan-${i}`)
  await publish(w, topic, batch)
  await publish(w, topic, 'fan-10')
  const expected = sorted([...batch, 'fan-10'])
  for (const ch of chans) {
    await waitFor(() => cons[ch].received.length >= 11, `11 deliveries on ${ch}`)
    eq(sorted(cons[ch].bodies()), expected, `bodies on channel ${ch}`)
    await waitChannel(topic, ch, {
      depth: 0, in_flight_count: 0, message_count: 11, requeue_count: 0,
      timeout_count: 0, client_count: 1,
    })
  }
  await waitTopic(topic, {message_count: 11, depth: 0})
  for (const ch of chans) await closeConsumers([cons[ch]], topic, ch)
  assertNoClientErrors()
}

async function scenarioEphemeral(w) {
  const topic = 'js_eph'
  const ch = 'tmp#ephemeral'
  const c = new Consumer(topic, ch, finishAll, {maxInFlight: 3})
  await waitSubscribers(topic, ch, 1)
  await publish(w, topic, ['e1', 'e2', 'e3'])
  await waitFor(() => c.received.length >= 3, '3 deliveries')
  eq(sorted(c.bodies()), ['e1', 'e2', 'e3'], 'bodies')
  await waitChannel(topic, ch, {depth: 0, in_flight_count: 0, message_count: 3, client_count: 1})
  c.close()
  await waitFor(async () => (await channelStats(topic, ch)) === null,
    'ephemeral channel removed after its last client left')
  check((await topicStats(topic)) !== null, 'non-ephemeral topic must survive')
  assertNoClientErrors()
}

async function scenarioPauseEmptyDelete(w) {
  const topic = 'js_admin'
  const ch = 'c'
  const c = new Consumer(topic, ch, finishAll, {maxInFlight: 5})
  await waitSubscribers(topic, ch, 1)
  await httpOk('POST', `/channel/pause?${q({topic, channel: ch})}`)
  await waitChannel(topic, ch, {paused: true})
  await publish(w, topic, ['p1', 'p2', 'p3'])
  await waitChannel(topic, ch, {depth: 3, message_count: 3, in_flight_count: 0})
  await tick(300) // negative check: a paused channel delivers nothing
  eq(c.received.length, 0, 'deliveries while channel paused')
  await httpOk('POST', `/channel/empty?${q({topic, channel: ch})}`)
  await waitChannel(topic, ch, {depth: 0, message_count: 3, paused: true})
  await httpOk('POST', `/channel/unpause?${q({topic, channel: ch})}`)
  await publish(w, topic, 'after-empty')
  await waitFor(() => c.received.length >= 1, 'delivery after unpause')
  eq(c.bodies(), ['after-empty'], 'bodies after /channel/empty + unpause')
  await waitChannel(topic, ch, {depth: 0, in_flight_count: 0, message_count: 4, paused: false})
  await closeConsumers([c], topic, ch)
  await httpOk('POST', `/topic/delete?${q({topic})}`)
  await waitFor(async () => (await topicStats(topic)) === null, 'topic removed')
  const r = await http('POST', `/topic/delete?${q({topic})}`)
  eq([r.status, JSON.parse(r.text).message], [404, 'TOPIC_NOT_FOUND'], 'second delete')
  assertNoClientErrors()
}

// IDENTIFY snappy=true / deflate=true: compressed streams both ways (Writer and Reader).
async function compression(kind) {
  const topic = `js_${kind}`
  const ch = 'c'
  const w = await makeWriter({[kind]: true})
  const c = new Consumer(topic, ch, finishAll, {maxInFlight: 10, [kind]: true})
  await waitSubscribers(topic, ch, 1)
  const bodies = []
  for (let i = 0; i < 20; i++) bodies.push(`${kind}-${i}-`.repeat(40))
  await publish(w, topic, bodies.slice(0, 10))
  for (const b of bodies.slice(10)) await publish(w, topic, b)
  await waitFor(() => c.received.length >= 20, `20 deliveries over ${kind}`)
  eq(sorted(c.bodies()), sorted(bodies), `bodies over ${kind}`)
  const st = await waitChannel(topic, ch, {depth: 0, in_flight_count: 0, message_count: 20, client_count: 1})
  eq(st.clients[0][kind], true, `reader's /stats client entry ${kind}`)
  eq(st.clients[0].tls, TLS !== null, `reader's /stats client entry tls`)
  if (TLS) check(/^TLS1\.[23]$/.test(st.clients[0].tls_version), `tls_version ${st.clients[0].tls_version}`)
  const producers = (await stats()).producers || []
  check(producers.some((p) => p[kind] === true && p.tls === (TLS !== null)), `no producer with ${kind}=true, tls=${TLS !== null} in /stats producers: ${JSON.stringify(producers)}`)
  await closeConsumers([c], topic, ch)
  w.close()
  assertNoClientErrors()
}

async function scenarioCompressionSnappy() {
  await compression('snappy')
}

async function scenarioCompressionDeflate() {
  await compression('deflate')
}

const SCENARIOS = [
  ['publish: Writer PUB/MPUB/DPUB + HTTP /pub /mpub /pub?defer, stats exact', scenarioPublish],
  ['3 readers, maxInFlight=5: exactly-once, RDY window, per-client counters', scenarioManyReaders],
  ['requeue (immediate + 1s deferred, backoff=false): attempts 1 -> 2', scenarioRequeue],
  ['touch keeps a message past msg_timeout', scenarioTouch],
  ['timeout redelivery with attempts+1, timeout_count', scenarioTimeout],
  ['fan-out to 2 channels', scenarioFanout],
  ['#ephemeral channel removed after its reader closes', scenarioEphemeral],
  ['channel pause/empty/unpause, topic delete', scenarioPauseEmptyDelete],
  ['compression: snappy (Writer + Reader)', scenarioCompressionSnappy],
  ['compression: deflate (Writer + Reader)', scenarioCompressionDeflate],
]

async function main() {
  const overall = setTimeout(() => {
    console.log(`FAIL: overall timeout of ${ARGS.timeout}s hit during scenario: ${CURRENT}`)
    process.exit(3)
  }, ARGS.timeout * 1000)
  const w = await makeWriter()
  let passed = 0
  for (const [name, fn] of SCENARIOS) {
    if (ARGS.only && !fn.name.includes(ARGS.only)) continue
    if (ARGS.skip && fn.name.includes(ARGS.skip)) continue
    CURRENT = name
    const t0 = now()
    try {
      await fn(w)
    } catch (err) {
      if (err instanceof Failure) console.log(`FAIL: ${name}: ${err.message}`)
      else console.log(`FAIL: ${name}: unexpected exception: ${err && err.stack ? err.stack : err}`)
      process.exit(1)
    }
    passed += 1
    console.log(`ok - nsqjs: ${name} (${((now() - t0) / 1000).toFixed(2)}s)`)
  }
  w.close()
  clearTimeout(overall)
  console.log(`nsqjs ${nsqjsVersion}: all ${passed} scenarios passed`)
  process.exit(0)
}

process.on('unhandledRejection', (err) => {
  console.log(`FAIL: ${CURRENT}: unhandled rejection: ${err && err.stack ? err.stack : err}`)
  process.exit(1)
})
process.on('uncaughtException', (err) => {
  console.log(`FAIL: ${CURRENT}: uncaught exception: ${err && err.stack ? err.stack : err}`)
  process.exit(1)
})

main()
