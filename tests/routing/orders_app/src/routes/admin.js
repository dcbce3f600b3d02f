'use strict';
// A sub-application mounted under /admin, as some teams do for back-office pages.
const express = require('express');

const adminApp = express();
adminApp.get('/health', (req, res) => res.json({ ok: true }));
adminApp.post('/reindex', (req, res) => res.status(202).end());

module.exports = { adminApp };
