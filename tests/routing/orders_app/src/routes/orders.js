'use strict';
const express = require('express');

function ordersRouter() {
  const router = express.Router();
  router.get('/', (req, res) => res.json({ items: [] }));
  router.post('/', (req, res) => res.status(201).json({ id: 1 }));
  router.get('/:orderId(\\d+)', (req, res) => res.json({ id: Number(req.params.orderId) }));
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
