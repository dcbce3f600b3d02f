'use strict';
/**
 * `strangler routes discover --express APP`: load an Express (4 or 5) app in Node and write its routes
 * as JSON to OUT. Usage: node express_routes.js APP OUT
 *
 * Nothing is served: net.Server#listen is a no-op, so `app.listen()` in the app's main file binds no port.
 * Express is resolved from the app's own folder (the one the app uses), and before the app is loaded its
 * Router is wrapped so every `route()` (app.get, router.post, app.route, all...) and `use()` records the
 * caller's file:line; mount paths are recorded too, since Express 4 layers keep only a compiled regex.
 * Apps are captured as Express creates them (application.init); if the module only exports a factory
 * (`createApp(deps)`), the factory is called with a stub that answers every property access and call.
 * The Python side bounds this process with a timeout and translates the paths.
 */
const fs = require('node:fs');
const http = require('node:http');
const net = require('node:net');
const path = require('node:path');
const url = require('node:url');
const Module = require('node:module');

const [entryArg, outPath] = process.argv.slice(2);
const entry = path.resolve(entryArg);
const warnings = [];
const apps = [];
const layerInfo = new WeakMap(); // layer -> {path, source, app}
const routeInfo = new WeakMap(); // Route -> {source}
const SELF = __filename;

function write(result) {
  fs.writeFileSync(outPath, JSON.stringify(result));
}

const realExit = process.exit.bind(process);

function fail(message) {
  write({ error: message });
  realExit(0); // the error is in the result; a non-zero status would mean "the script itself broke"
}

/** file:line of the first stack frame outside node_modules, node internals and this script. */
function callerSource() {
  const stack = new Error().stack.split('\n').slice(1);
  for (const frame of stack) {
    const found = /\(?((?:file:\/\/)?[^\s()]+):(\d+):\d+\)?$/.exec(frame.trim());
    if (!found) continue;
    const file = found[1].replace(/^file:\/\//, '');
    if (file === SELF || file.startsWith('node:') || file.includes(`${path.sep}node_modules${path.sep}`)) continue;
    if (!path.isAbsolute(file)) continue;
    return `${file}:${found[2]}`;
  }
  return null;
}

// Serve nothing: every server (http, https, express' app.listen) goes through net.Server#listen.
net.Server.prototype.listen = function listen() { return this; };
// An app that exits while loading (bad configuration, for instance) is reported, not obeyed.
process.exit = (code) => { throw new Error(`the app called process.exit(${code}) while loading`); };

const appRequire = Module.createRequire(entry);
let express;
let version;
try {
  express = appRequire('express');
  version = JSON.parse(fs.readFileSync(appRequire.resolve('express/package.json'), 'utf8')).version;
} catch (err) {
  fail(`cannot load express from ${path.dirname(entry)} (${err.message}); run npm install in the app's folder`);
}
const major = Number.parseInt(version, 10);

// Express 4: routers get their methods from the Router function itself; Express 5 (router 2.x): prototype.
const routerProto = typeof express.Router.prototype.route === 'function' ? express.Router.prototype : express.Router;
const routerOf = (app) => (major >= 5 ? app.router : app._router);

const originalRoute = routerProto.route;
routerProto.route = function route(routePath) {
  const created = originalRoute.apply(this, arguments);
  routeInfo.set(created, { source: callerSource() });
  return created;
};

/** How many leading arguments of use() are the mount path (0 or 1), as Express decides it. */
function pathArgs(args) {
  let arg = args[0];
  while (Array.isArray(arg) && arg.length !== 0) arg = arg[0];
  return typeof arg === 'function' ? 0 : 1;
}

function mountPath(args) {
  return pathArgs(args) ? args[0] : '/';
}

const originalUse = routerProto.use;
routerProto.use = function use() {
  const before = this.stack.length;
  const result = originalUse.apply(this, arguments);
  const source = callerSource();
  const mount = mountPath(arguments);
  for (const layer of this.stack.slice(before)) {
    if (!layerInfo.has(layer)) layerInfo.set(layer, { path: mount, source });
  }
  return result;
};

const appProto = express.application;
const originalInit = appProto.init;
appProto.init = function init() {
  apps.push(this);
  return originalInit.apply(this, arguments);
};
const originalAppUse = appProto.use;
appProto.use = function use() {
  const args = Array.from(arguments);
  const mount = mountPath(args);
  const fns = args.slice(pathArgs(args)).flat(Infinity);
  // Routers are reached through this.router lazily; read its stack length after the call created it.
  const router = routerOf(this);
  const before = router ? router.stack.length : 0;
  const result = originalAppUse.apply(this, arguments);
  const added = routerOf(this).stack.slice(before);
  const source = callerSource();
  added.forEach((layer, i) => {
    const fn = fns[i];
    const isApp = fn && typeof fn.handle === 'function' && typeof fn.set === 'function';
    layerInfo.set(layer, { path: mount, source, app: isApp ? fn : undefined });
  });
  return result;
};

function describe(value) {
  if (typeof value === 'string') return { s: value };
  if (value instanceof RegExp) return { re: value.source, flags: value.flags };
  if (Array.isArray(value)) return { any: value.map(describe) };
  return { s: String(value) };
}

function isRouter(handle) {
  return typeof handle === 'function' && Array.isArray(handle.stack);
}

function walk(router, prefix, out, seen) {
  if (!router || seen.has(router)) return;
  seen.add(router);
  for (const layer of router.stack) {
    if (layer.route) {
      const route = layer.route;
      const methods = Object.keys(route.methods).filter((m) => route.methods[m] && m !== '_all');
      // Express 4's app.all() registers each method in turn rather than setting _all.
      const every = http.METHODS.every((m) => route.methods[m.toLowerCase()]);
      out.push({
        kind: 'route',
        mount: prefix,
        path: describe(route.path),
        methods: methods.map((m) => m.toUpperCase()),
        all: Boolean(route.methods._all) || every,
        source: (routeInfo.get(route) || {}).source || null,
      });
      continue;
    }
    const info = layerInfo.get(layer) || {};
    const mount = info.path !== undefined ? info.path : (layer.rawPath !== undefined ? layer.rawPath : '/');
    const sub = info.app ? routerOf(info.app) : (isRouter(layer.handle) ? layer.handle : null);
    if (sub) {
      walk(sub, prefix.concat([describe(mount)]), out, seen);
    } else if (mount !== '/') {
      out.push({ kind: 'mount', mount: prefix, path: describe(mount), handler: layer.name, source: info.source || null });
    }
  }
}

function stub() {
  const target = function stubbed() {};
  const handler = {
    get(_, key) {
      if (key === 'then') return undefined; // not a promise
      if (key === Symbol.toPrimitive) return () => '';
      if (key === Symbol.iterator) return function* empty() {};
      return proxy;
    },
    apply() { return proxy; },
    construct() { return proxy; },
  };
  const proxy = new Proxy(target, handler);
  return proxy;
}

function isApp(value) {
  return typeof value === 'function' && typeof value.handle === 'function' && typeof value.set === 'function';
}

async function main() {
  let exported;
  try {
    try {
      exported = appRequire(entry);
    } catch (err) {
      if (err.code !== 'ERR_REQUIRE_ESM') throw err;
      // An ES module app: import() shares the CommonJS cache, so the same patched express is used.
      const namespace = await import(url.pathToFileURL(entry).href);
      exported = namespace.default !== undefined ? namespace.default : { ...namespace };
    }
  } catch (err) {
    if (apps.length === 0) fail(`loading ${entry} failed: ${err.message}`);
    warnings.push(`loading ${entry} failed after it created an app: ${err.message}`);
  }
  const roots = [];
  if (isApp(exported)) roots.push(exported);
  else if (exported && typeof exported === 'object') {
    for (const value of Object.values(exported)) if (isApp(value)) roots.push(value);
  }
  if (roots.length === 0 && apps.length === 0) {
    // A factory module (module.exports = createApp, or {createApp}): build the app around stubs.
    const factories = typeof exported === 'function' ? [['module.exports', exported]]
      : Object.entries(exported || {}).filter(([k, v]) => typeof v === 'function' && /app|create|make|build/i.test(k));
    for (const [name, factory] of factories) {
      try {
        const made = await factory(stub(), stub(), stub());
        if (isApp(made)) roots.push(made);
      } catch (err) {
        warnings.push(`calling the factory ${name}() with stub arguments failed: ${err.message}`);
      }
      if (roots.length || apps.length) break;
    }
  }
  for (const app of apps) if (!app.parent && !roots.includes(app)) roots.push(app);
  if (roots.length === 0) fail(`${entry} created no Express app (neither exported one nor a factory that builds one)`);
  const entries = [];
  const seen = new Set();
  for (const app of roots) walk(routerOf(app), [], entries, seen);
  write({ express: version, entries, warnings });
  realExit(0);
}

main().catch((err) => fail(`discovery failed: ${err.stack || err}`));
