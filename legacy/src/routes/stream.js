'use strict';
/**
 * GET /api/v1/posts/stream (server-sent events), GET /api/v1/ws (WebSocket), GET /health/streams.
 *
 * Both push the events of lib/streamHub.js. A client that stops reading is dropped when a write has
 * not been flushed within WS_SEND_TIMEOUT_S (or its buffer passes MAX_BUFFERED); a WebSocket that
 * answers no ping before the next one (WS_PING_S) is dropped as dead; an event stream whose client went
 * away ends on the socket's close. Every drop ends the subscription.
 *
 * WebSocket upgrades go through Express like any request (server.js hands the 'upgrade' event to the
 * app with a response bound to the socket), so auth and the 401/404 bodies are the usual ones.
 */
const express = require('express');
const { WebSocketServer } = require('ws');
const { errors } = require('../errors');
const { requireAuth } = require('../middleware/auth');
const { parseId, notAfter, sse, wsMessage } = require('../lib/streamHub');

const MAX_BUFFERED = 8 * 1024 * 1024;
const UPGRADE = Symbol('upgrade');

/** Write `chunk`; drop the client when it is not flushed within the send timeout. */
function sender(hub, sendTimeoutMs, stream, drop) {
  let timer = null;
  const onDrain = () => {
    clearTimeout(timer);
    timer = null;
  };
  stream.on('drain', onDrain);
  const send = (chunk) => {
    if (stream.destroyed) return;
    const flushed = stream.write(chunk);
    if (stream.writableLength > MAX_BUFFERED) {
      hub.gauges.slow_dropped += 1;
      drop();
    } else if (!flushed && timer === null) {
      timer = setTimeout(() => {
        hub.gauges.slow_dropped += 1;
        drop();
      }, sendTimeoutMs);
    }
  };
  send.stop = () => clearTimeout(timer);
  return send;
}

function streamRoutes(ctx) {
  const { hub, config } = ctx;
  const router = express.Router();
  const auth = requireAuth(ctx);
  const sendTimeoutMs = config.wsSendTimeoutS * 1000;
  const wss = new WebSocketServer({ noServer: true, maxPayload: 4096 });

  router.get('/api/v1/posts/stream', async (req, res) => {
    res.status(200);
    res.setHeader('Content-Type', 'text/event-stream; charset=utf-8');
    res.setHeader('Cache-Control', 'no-cache');
    res.setHeader('X-Accel-Buffering', 'no'); // nginx-style proxies: do not buffer the stream
    if (req.method === 'HEAD') {
      res.end();
      return;
    }
    let last = parseId(req.get('Last-Event-ID'));
    let replaying = last !== null;
    const held = []; // live events that arrive while the history is being sent
    const send = sender(hub, sendTimeoutMs, res, () => res.destroy());
    const sub = hub.subscribe((ev) => {
      if (ev === null) {
        res.end();
      } else if (replaying) {
        held.push(ev);
      } else if (last === null || !notAfter(ev.key, last)) {
        last = ev.key;
        send(sse(ev));
      }
    });
    hub.gauges.sse_open += 1;
    const heartbeat = setInterval(() => send(': heartbeat\n\n'), config.streamHeartbeatS * 1000);
    res.on('close', () => {
      clearInterval(heartbeat);
      send.stop();
      hub.unsubscribe(sub);
      hub.gauges.sse_open -= 1;
    });
    send('retry: 2000\n\n');
    if (replaying) {
      try {
        for (const ev of await hub.history(last)) {
          last = ev.key;
          send(sse(ev));
        }
      } catch (err) {
        ctx.logger.warn('stream history failed', { request_id: req.id, error: err.message });
        res.destroy();
        return;
      }
      replaying = false;
      for (const ev of held) sub.onItem(ev);
    }
  });

  router.get('/api/v1/ws', auth, (req, res) => {
    const upgrade = req[UPGRADE];
    if (upgrade === undefined || (req.headers.upgrade || '').toLowerCase() !== 'websocket') {
      throw errors.upgradeRequired();
    }
    res.detachSocket(upgrade.socket);
    wss.handleUpgrade(req, upgrade.socket, upgrade.head, (ws) => {
      hub.gauges.ws_open += 1;
      ws.alive = true;
      ws.on('pong', () => { ws.alive = true; });
      ws.on('message', () => {}); // clients have nothing to say
      let dropped = false;
      const drop = () => {
        if (dropped) return;
        dropped = true;
        hub.gauges.slow_dropped += 1;
        ws.terminate();
      };
      const sub = hub.subscribe((ev) => {
        if (ev === null) {
          ws.close(1001, 'going away');
          setTimeout(() => ws.terminate(), 2000).unref(); // shutdown does not wait on a silent peer
        } else if (ws.readyState === ws.OPEN) {
          if (ws.bufferedAmount > MAX_BUFFERED) {
            drop();
            return;
          }
          // The callback runs once the frame is flushed to the socket (or the socket died).
          const timer = setTimeout(drop, sendTimeoutMs);
          ws.send(wsMessage(ev), () => clearTimeout(timer));
        }
      });
      ws.on('close', () => {
        hub.unsubscribe(sub);
        hub.gauges.ws_open -= 1;
      });
    });
  });

  router.get('/health/streams', (req, res) => {
    res.json(hub.gauges);
  });

  /** Dead-peer sweep: a socket that answered no ping since the last sweep is terminated. */
  const sweep = setInterval(() => {
    for (const ws of wss.clients) {
      if (!ws.alive) {
        hub.gauges.dead_dropped += 1;
        ws.terminate();
      } else {
        ws.alive = false;
        ws.ping();
      }
    }
  }, config.wsPingS * 1000);
  sweep.unref();

  return router;
}

module.exports = { streamRoutes, UPGRADE };
