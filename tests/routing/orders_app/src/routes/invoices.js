'use strict';
const express = require('express');

function invoicesRouter() {
  const router = express.Router();
  router.route('/:invoiceId')
    .get((req, res) => res.json({ id: req.params.invoiceId }))
    .patch((req, res) => res.json({ id: req.params.invoiceId }));
  router.get('/:invoiceId/pdf', (req, res) => res.type('pdf').send('%PDF'));
  router.post(['/:invoiceId/send', '/:invoiceId/resend'], (req, res) => res.status(202).end());
  return router;
}

module.exports = { invoicesRouter };
