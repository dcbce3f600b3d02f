'use strict';
// An orders/invoices backend as another team would write it (Express 4): the test bed of
// `strangler routes discover` and of the adoption test (tests/adopt). Orders live in memory (src/store.js).
const path = require('path');
const express = require('express');
const { ordersRouter } = require('./routes/orders');
const { invoicesRouter } = require('./routes/invoices');
const { adminApp } = require('./routes/admin');

const app = express();
app.use(express.json());

const api = express.Router();
api.use('/orders', ordersRouter());
api.use('/invoices', invoicesRouter());
app.use('/api/v2', api);

app.use('/admin', adminApp);
app.use('/static', express.static(path.join(__dirname, '..', 'public')));

app.route('/status')
  .get((req, res) => res.json({ ok: true }))
  .head((req, res) => res.end());

app.all('/webhooks/:provider', (req, res) => res.status(202).json({ provider: req.params.provider }));
app.get(/^\/legacy-report-(\d{4})$/, (req, res) => res.json({ year: req.params[0] }));
app.get('/docs/*', (req, res) => res.json({ page: req.params[0] }));
app.get('/exports/:from-:to', (req, res) => res.json(req.params));

module.exports = app;

if (require.main === module) {
  app.listen(process.env.PORT || 4000, () => console.log('orders listening'));
}
