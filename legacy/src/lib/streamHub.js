'use strict';
/**
 * The post event feed, shared through Redis with every instance of either service (docs/API.md, Events).
 *
 * A created post is published by one script: XADD to `<prefix>posts:stream` (capped by
 * STREAM_HISTORY_MAX, the history a Last-Event-ID resumes from) and PUBLISH of "<id> <json>" on
 * `<prefix>posts:live`. The process holds ONE subscriber connection and fans live events out to its
 * subscribers' bounded queues; one that falls behind is dropped (it reconnects and resumes). After a
 * reconnect the hub re-reads the stream from the last id it saw. The new service does the same
 * (services/stream/hub.py).
 */

const QUEUE_MAX = 1024;
const PAGE = 500;
const ID_RE = /^([0-9]{1,20})-([0-9]{1,20})$/;

// XADD then PUBLISH in one atomic step: an event is in the history before any live reader sees it.
const PUBLISH = `
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'post', ARGV[2])
redis.call('PUBLISH', KEYS[2], id .. ' ' .. ARGV[2])
return id
`;

/** A stream id "<ms>-<seq>" as [ms, seq] (comparable), or null when it is not one. */
function parseId(raw) {
  const match = typeof raw === 'string' ? ID_RE.exec(raw.trim()) : null;
  return match ? [Number(match[1]), Number(match[2])] : null;
}

/** a <= b for parsed ids. */
function notAfter(a, b) {
  return a[0] < b[0] || (a[0] === b[0] && a[1] <= b[1]);
}

function event(id, data) {
  return { id, key: parseId(id), data };
}

/** The server-sent event, byte for byte. */
function sse(ev) {
  return `id: ${ev.id}\nevent: post\ndata: ${ev.data}\n\n`;
}

/** The WebSocket text message, byte for byte. */
function wsMessage(ev) {
  return `{"type":"post","id":"${ev.id}","post":${ev.data}}`;
}

class Hub {
  constructor({ redis, config, logger }) {
    this.redis = redis;
    this.logger = logger;
    this.streamKey = `${config.redisPrefix}posts:stream`;
    this.channel = `${config.redisPrefix}posts:live`;
    this.historyMax = config.streamHistoryMax;
    this.gauges = { sse_open: 0, ws_open: 0, slow_dropped: 0, dead_dropped: 0 };
    this.subs = new Set();
    this.last = null;
    this.closed = false;
    redis.defineCommand('strPublishPost', { numberOfKeys: 2, lua: PUBLISH });
    // Its own connection: a subscriber may run no other command. No command timeout, retried forever.
    // Named, so an operator (or a test) can find it in CLIENT LIST.
    this.sub = redis.duplicate({
      commandTimeout: undefined, maxRetriesPerRequest: null, connectionName: `${config.redisPrefix}stream-hub`,
    });
    this.sub.on('error', () => {}); // the main client already logs Redis trouble
    this.sub.on('message', (channel, message) => this.onMessage(message));
    this.sub.on('ready', () => this.refill());
    this.sub.subscribe(this.channel).catch((err) => logger.warn('stream subscribe failed', { error: err.message }));
  }

  /** Append a created post's JSON to the history and announce it; resolves to its event id. */
  async publish(json) {
    return this.redis.strPublishPost(this.streamKey, this.channel, this.historyMax, json);
  }

  /** A new subscription: {push(ev|null), onItem, overflowed}. `onItem` is called for each item. */
  subscribe(onItem) {
    const sub = { onItem, pending: 0, overflowed: false };
    if (this.closed) {
      setImmediate(() => onItem(null));
    }
    this.subs.add(sub);
    return sub;
  }

  unsubscribe(sub) {
    this.subs.delete(sub);
  }

  /** Every event still in the history after `after` ([ms, seq]), oldest first, in pages. */
  async history(after) {
    const out = [];
    let start = `(${after[0]}-${after[1]}`;
    for (;;) {
      const rows = await this.redis.xrange(this.streamKey, start, '+', 'COUNT', PAGE);
      for (const [id, fields] of rows) {
        const at = fields.indexOf('post');
        if (parseId(id) !== null && at >= 0) out.push(event(id, fields[at + 1]));
      }
      if (rows.length < PAGE) return out;
      start = `(${rows[rows.length - 1][0]}`;
    }
  }

  onMessage(message) {
    const space = message.indexOf(' ');
    const ev = event(message.slice(0, space), message.slice(space + 1));
    if (ev.key === null || (this.last !== null && notAfter(ev.key, this.last))) return;
    this.last = ev.key;
    this.fanOut(ev);
  }

  fanOut(ev) {
    for (const sub of this.subs) sub.onItem(ev);
  }

  /** After a (re)connect: replay what was published while the subscriber was away. */
  async refill() {
    if (this.last === null) return;
    try {
      for (const ev of await this.history(this.last)) {
        if (notAfter(ev.key, this.last)) continue;
        this.last = ev.key;
        this.fanOut(ev);
      }
    } catch (err) {
      this.logger.warn('stream refill failed', { error: err.message });
    }
  }

  /** End every subscription (shutdown) and close the subscriber connection. */
  close() {
    if (this.closed) return;
    this.closed = true;
    for (const sub of [...this.subs]) sub.onItem(null);
    this.sub.disconnect();
  }
}

module.exports = { Hub, parseId, notAfter, sse, wsMessage, QUEUE_MAX };
