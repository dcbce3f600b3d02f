'use strict';
const express = require('express');
const store = require('../store').createStore(); // one per process, like a database
function ordersRouter() {
  const router = express.Router();
  router.get('/', (req, res) => res.json({ items: store.list() }));
  router.post('/', (req, res) => { const order = store.create(req.body || {}); res.status(201).location(`${req.protocol}://${req.get('host')}${req.baseUrl}/${order.id}`).json(order); });
  router.get('/:orderId(\\d+)', (req, res) => { const order = store.get(Number(req.params.orderId)); return order ? res.json(order) : res.status(404).json({ error: 'order not found' }); });
  router.put('/:orderId', (req, res) => res.json({ id: req.params.orderId }));
  router.delete('/:orderId', (req, res) => res.status(204).end());
  router.get('/search/:status?', (req, res) => res.json({ status: req.params.status || 'any' }));

  // Line items: a router nested in a router, reading the parent's :orderId.
  const lines = express.Router({ mergeParams: true });
  lines.get('/', (req, res) => res.json({ order: req.params.orderId, lines: [] }));
  lines.patch('/:lineId', (req, res) => res.json(req.params));
  router.use('/:orderId/lines', lines);
  return router;
}

module.exports = { ordersRouter };
