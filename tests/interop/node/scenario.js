#!/usr/bin/env node
// The store/secret scenario as a Node service writes it: @grpc/grpc-js, with
// @grpc/proto-loader reading sealgate's proto/ at run time (no generated code).
//
//   cd tests/interop/node && npm ci
//   SEALGATE_API_KEY=osk_... node scenario.js
//
// Environment: SEALGATE_ADDR (host:port, default 127.0.0.1:50051), SEALGATE_API_KEY (an
// organization's key, from `sealgate admin create-org`), and optionally SEALGATE_PROTO_DIR (the
// directory holding sealgate/v1/*.proto; default: this repository's proto/). The
// google/protobuf/*.proto imports come from /usr/include (Debian: libprotobuf-dev).
//
// It makes three stores whose names start with "interop-js-" and deletes them again, prints one
// line per check (the same checks as tests/interop/python/scenario.py), and exits 0 when every
// check passed, 1 at the first unexpected outcome (saying what was expected and what came back),
// 2 when it cannot start.
'use strict';

const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');
const util = require('node:util');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const ADDR = process.env.SEALGATE_ADDR || '127.0.0.1:50051';
const API_KEY = process.env.SEALGATE_API_KEY || '';
const PROTO_DIR = process.env.SEALGATE_PROTO_DIR ||
  path.resolve(__dirname, '..', '..', '..', 'proto');
// Every call has a deadline: a hung server fails the run instead of hanging it.
const RPC_TIMEOUT_MS = 10000;
const KIB = 1024;

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const RFC3339_UTC = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$/;

// The first outcome the scenario did not expect: ends the run with exit status 1.
class Unexpected extends Error {}

function ok(step, detail) {
  console.log(`ok  ${step}${detail ? ': ' + detail : ''}`);
}

function check(step, condition, expected, got) {
  if (!condition) {
    const shown = util.inspect(got, { breakLength: Infinity });
    throw new Unexpected(`${step}: expected ${expected}, got ${shown}`);
  }
}

function statusName(code) {
  return Object.keys(grpc.status).find((name) => grpc.status[name] === code) || String(code);
}

function loadApi() {
  const protos = fs.readdirSync(path.join(PROTO_DIR, 'sealgate', 'v1'))
    .filter((f) => f.endsWith('.proto'))
    .map((f) => `sealgate/v1/${f}`);
  const definition = protoLoader.loadSync(protos, {
    includeDirs: [PROTO_DIR, '/usr/include'],
    keepCase: true,  // field names as in the .proto files: store_id, egress_allowlist, ...
    longs: Number,   // uint64 version and use_count as numbers
    defaults: true,  // unset fields as their defaults ('' and []), as other languages show them
  });
  return { definition, v1: grpc.loadPackageDefinition(definition).sealgate.v1 };
}

// Both services on one channel, the API key on every call (none if apiKey is empty).
class Client {
  constructor(api, address, apiKey, channelOverride) {
    const credentials = grpc.credentials.createInsecure();
    this.stores = new api.v1.SecretStoreService(address, credentials, { channelOverride });
    this.secrets = new api.v1.SecretService(address, credentials,
      { channelOverride: this.stores.getChannel() });
    this.definition = api.definition;
    this.metadata = new grpc.Metadata();
    if (apiKey) this.metadata.add('authorization', `Bearer ${apiKey}`);
    this.lastMethod = null;
  }

  // Calls `method` ("CreateSecretStore", "SetSecret", ...) with `request`; resolves to the
  // response, rejects with the grpc-js error (code, details).
  call(method, request) {
    this.lastMethod = method;
    const stub = typeof this.stores[method] === 'function' ? this.stores : this.secrets;
    return new Promise((resolve, reject) => {
      stub[method](request, this.metadata, { deadline: Date.now() + RPC_TIMEOUT_MS },
        (err, response) => (err ? reject(err) : resolve(response)));
    });
  }

  // ListSecrets once more, resolving to the response as the bytes that came off the wire.
  listSecretsBytes(storeId) {
    this.lastMethod = 'ListSecrets';
    const method = this.definition['sealgate.v1.SecretService'].ListSecrets;
    return new Promise((resolve, reject) => {
      this.secrets.makeUnaryRequest(method.path, method.requestSerialize, (bytes) => bytes,
        { store_id: storeId }, this.metadata, { deadline: Date.now() + RPC_TIMEOUT_MS },
        (err, bytes) => (err ? reject(err) : resolve(bytes)));
    });
  }

  close() {
    this.stores.close();
  }
}

// Runs call(), which must fail with status `code` and, given `field`, a message that names the
// field first ("name: ...").
async function expectError(step, code, call, field) {
  let result;
  try {
    result = await call();
  } catch (e) {
    if (e instanceof Unexpected || e.code === undefined) throw e;
    const got = `${statusName(e.code)} '${e.details}'`;
    check(step, e.code === code, statusName(code), got);
    if (field !== undefined) {
      check(step, (e.details || '').startsWith(`${field}:`),
        `${statusName(code)} naming the field '${field}'`, got);
    }
    ok(step, got);
    return;
  }
  throw new Unexpected(
    `${step}: expected ${statusName(code)}, the call succeeded: ${JSON.stringify(result)}`);
}

function hex(bytes) {
  return crypto.randomBytes(bytes).toString('hex');
}

async function scenario(api, client) {
  const prefix = `interop-js-${hex(4)}`;

  // --- A store with an egress allowlist: create, get, list ----------------------------------
  const allowlist = ['api.stripe.com', '*.openai.com'];
  const store = await client.call('CreateSecretStore',
    { name: prefix, egress_allowlist: allowlist });
  let step = 'CreateSecretStore';
  check(step, store.name === prefix, `name '${prefix}'`, store.name);
  check(step, util.isDeepStrictEqual(store.egress_allowlist, allowlist), JSON.stringify(allowlist),
    store.egress_allowlist);
  check(step, UUID.test(store.id), 'a UUID id', store.id);
  check(step, RFC3339_UTC.test(store.created_at), 'an RFC 3339 UTC created_at', store.created_at);
  ok(step, `${store.name} id=${store.id} egress_allowlist=${JSON.stringify(allowlist)}`);

  const got = await client.call('GetSecretStore', { store_id: store.id });
  check('GetSecretStore', util.isDeepStrictEqual(got, store), 'the store as created', got);
  ok('GetSecretStore', `${got.name} created_at=${got.created_at}`);

  // Two more stores, so that pages of 2 take more than one page.
  const others = [];
  for (const i of [2, 3]) {
    others.push(await client.call('CreateSecretStore', { name: `${prefix}-${i}` }));
  }
  step = 'ListSecretStores';
  const listed = [];
  let pages = 0;
  let token = '';
  for (;;) {
    const page = await client.call('ListSecretStores', { page_size: 2, page_token: token });
    pages += 1;
    check(step, page.secret_stores.length <= 2, 'at most 2 stores a page',
      page.secret_stores.length);
    listed.push(...page.secret_stores.map((s) => s.id));
    token = page.next_page_token;
    if (!token) break;
    check(step, pages < 10000, 'the listing to end', `${pages} pages so far`);
  }
  check(step, pages >= 2, 'more than one page of 2', `${pages} page(s)`);
  check(step, new Set(listed).size === listed.length, 'each store listed once', listed);
  check(step, [store, ...others].every((s) => listed.includes(s.id)), 'the 3 new stores listed',
    listed);
  ok(step, `page_size=2: ${listed.length} stores over ${pages} pages`);

  // --- Update: rename (only the masked path changes), then clear the allowlist --------------
  const newName = `${prefix}-renamed`;
  const renamed = await client.call('UpdateSecretStore', {
    store_id: store.id, name: newName, egress_allowlist: ['not.masked.example.com'],
    update_mask: { paths: ['name'] },
  });
  step = 'UpdateSecretStore rename';
  check(step, renamed.name === newName, `'${newName}'`, renamed.name);
  check(step, util.isDeepStrictEqual(renamed.egress_allowlist, allowlist),
    'the allowlist unchanged', renamed.egress_allowlist);
  ok(step, `update_mask=[name] -> ${renamed.name}`);

  const cleared = await client.call('UpdateSecretStore', {
    store_id: store.id, update_mask: { paths: ['egress_allowlist'] },
  });
  step = 'UpdateSecretStore clear allowlist';
  check(step, cleared.egress_allowlist.length === 0, 'an empty allowlist',
    cleared.egress_allowlist);
  check(step, cleared.name === newName, 'the name kept', cleared.name);
  ok(step, 'update_mask=[egress_allowlist] -> []');

  // --- Secrets: versions 1 and 2 of one, a second one, list, delete -------------------------
  const values = [`tok-v1-${hex(16)}`, `tok-v2-${hex(16)}`, `whsec-${hex(16)}`];
  for (const [version, value] of [[1, values[0]], [2, values[1]]]) {
    const entry = await client.call('SetSecret', {
      store_id: store.id, name: 'API_TOKEN', value, allowed_hosts: ['api.stripe.com'],
    });
    step = `SetSecret version ${version}`;
    check(step, entry.version === version, `version ${version}`, entry.version);
    check(step, entry.store_id === store.id, `store_id ${store.id}`, entry.store_id);
    ok(step, `API_TOKEN allowed_hosts=${JSON.stringify(entry.allowed_hosts)}`);
  }
  await client.call('SetSecret', { store_id: store.id, name: 'WEBHOOK_SECRET', value: values[2] });

  step = 'ListSecrets';
  const { secrets: entries } = await client.call('ListSecrets', { store_id: store.id });
  const versions = Object.fromEntries(entries.map((e) => [e.name, e.version]));
  check(step, util.isDeepStrictEqual(versions, { API_TOKEN: 2, WEBHOOK_SECRET: 1 }),
    'API_TOKEN v2 and WEBHOOK_SECRET v1', versions);
  // No value anywhere: not in the bytes on the wire, and no field that could carry one.
  const raw = await client.listSecretsBytes(store.id);
  check(step, raw.includes('API_TOKEN'), 'the response to name API_TOKEN', raw.subarray(0, 80));
  check(step, !values.some((v) => raw.includes(v)), 'no secret value in the response',
    'a value in the response bytes');
  const fields = api.definition['sealgate.v1.SecretEntry'].type.field.map((f) => f.name);
  check(step, !fields.some((f) => f.includes('value')), 'no value field in SecretEntry', fields);
  ok(step, `API_TOKEN v2, WEBHOOK_SECRET v1, no value in the ${raw.length} response bytes`);

  await client.call('DeleteSecret', { store_id: store.id, name: 'WEBHOOK_SECRET' });
  const left = (await client.call('ListSecrets', { store_id: store.id })).secrets
    .map((e) => e.name);
  check('DeleteSecret', util.isDeepStrictEqual(left, ['API_TOKEN']), 'only API_TOKEN left', left);
  ok('DeleteSecret', `WEBHOOK_SECRET; left: ${JSON.stringify(left)}`);

  // --- What a client can get wrong, and the status it gets back ------------------------------
  await expectError('duplicate store name', grpc.status.ALREADY_EXISTS,
    () => client.call('CreateSecretStore', { name: newName }));
  await expectError('bad store name', grpc.status.INVALID_ARGUMENT,
    () => client.call('CreateSecretStore', { name: 'no spaces/slashes' }), 'name');
  await expectError('unknown store', grpc.status.NOT_FOUND,
    () => client.call('GetSecretStore', { store_id: crypto.randomUUID() }));
  const anonymous = new Client(api, ADDR, '', client.stores.getChannel());
  await expectError('no API key', grpc.status.UNAUTHENTICATED,
    () => anonymous.call('ListSecretStores', {}));
  await expectError('bad update_mask path', grpc.status.INVALID_ARGUMENT,
    () => client.call('UpdateSecretStore', {
      store_id: store.id, name: `${prefix}-x`, update_mask: { paths: ['egress'] },
    }), 'update_mask');
  await expectError('value too large', grpc.status.INVALID_ARGUMENT,
    () => client.call('SetSecret', {
      store_id: store.id, name: 'API_TOKEN', value: 'x'.repeat(64 * KIB + 1),
    }), 'value');

  step = 'errors changed nothing';
  const now = await client.call('GetSecretStore', { store_id: store.id });
  check(step, now.name === newName && now.egress_allowlist.length === 0,
    'the store as last updated', now);
  const after = (await client.call('ListSecrets', { store_id: store.id })).secrets
    .map((e) => [e.name, e.version]);
  check(step, util.isDeepStrictEqual(after, [['API_TOKEN', 2]]), 'API_TOKEN still at version 2',
    after);
  ok(step);

  // --- Delete the stores: they leave the API's view ------------------------------------------
  for (const s of [store, ...others]) {
    await client.call('DeleteSecretStore', { store_id: s.id });
  }
  ok('DeleteSecretStore', '3 stores');
  await expectError('GetSecretStore after delete', grpc.status.NOT_FOUND,
    () => client.call('GetSecretStore', { store_id: store.id }));
}

async function main() {
  if (!API_KEY) {
    console.error("scenario.js: set SEALGATE_API_KEY to an organization's API key");
    return 2;
  }
  let api;
  try {
    api = loadApi();
  } catch (e) {
    console.error(`scenario.js: cannot load sealgate/v1/*.proto from ${PROTO_DIR} ` +
      `(set SEALGATE_PROTO_DIR): ${e.message}`);
    return 2;
  }
  const version = require('@grpc/grpc-js/package.json').version;
  console.log(`sealgate store/secret scenario: Node @grpc/grpc-js ${version} -> ${ADDR}`);
  const client = new Client(api, ADDR, API_KEY);
  try {
    await scenario(api, client);
  } catch (e) {
    if (e instanceof Unexpected) {
      console.error(`FAIL ${e.message}`);
    } else if (e.code !== undefined && e.details !== undefined) {
      console.error(`FAIL ${client.lastMethod}: unexpected ${statusName(e.code)} '${e.details}'`);
    } else {
      console.error(`FAIL ${client.lastMethod}: ${e.stack || e}`);
    }
    return 1;
  } finally {
    client.close();
  }
  console.log('scenario passed');
  return 0;
}

main().then((status) => { process.exitCode = status; });
