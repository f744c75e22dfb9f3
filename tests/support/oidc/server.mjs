// A real OAuth 2.0 authorization server (oidc-provider) for Sluice's auth tests, on loopback.
//
//   node server.mjs PORT        (or OIDC_PORT=PORT node server.mjs; 0 is not allowed: the
//                                issuer must name the port)
//
// Environment (seconds): OIDC_ACCESS_TOKEN_TTL (default 3) for every access token,
// OIDC_REFRESH_TOKEN_TTL (default 86400).
//
// Clients (ids and secrets are fixed: tests/support/oidc.py names them too; each takes its
// secret only the registered way, basic or in the form, else invalid_client):
//   sluice-cc       / sluice-cc-secret       client_credentials, client_secret_basic
//   sluice-cc-post  / sluice-cc-post-secret  client_credentials, client_secret_post
//   sluice-rt       / sluice-rt-secret       authorization_code + refresh_token, basic
//   sluice-rt-post  / sluice-rt-post-secret  the same, client_secret_post
//   sluice-rs       / sluice-rs-secret       a resource server: introspection only
// The client-credentials clients may ask for the scopes api:read and api:write (api:admin is
// known but refused: invalid_scope). A `resource` (RFC 8707; an absolute URI) gives an opaque
// token whose introspection says aud = that resource; `audience` (Auth0's spelling) is taken
// as `resource` when no `resource` is sent. Refresh tokens rotate on every use; a used one
// presented again fails with invalid_grant and revokes its whole grant (every token of it).
//
// Not OAuth, for the tests (loopback only):
//   GET    /_admin/stats   every token-endpoint request so far, and counts per grant type
//   DELETE /_admin/stats   forget them
// (each request: t, grant_type, client_id, client_auth (basic|body|none), scope, resource,
//  audience, status, error, error_description, error_detail (oidc-provider's own reason, e.g.
//  "refresh token already used"), expires_in, and refresh_token / issued_refresh_token: the
//  first 16 hex digits of the SHA-256 of the refresh token presented / issued)
//   POST   /_admin/token_faults  {"times": N, "status": 503, "error": "temporarily_unavailable",
//                                 "delay": seconds}: the next N token requests wait `delay`,
//                                 then (if status) get that error instead of an answer
// Every token request is also printed to stdout as one line: `token {json}`.

import { createHash } from 'node:crypto';
import * as querystring from 'node:querystring';

import Provider from 'oidc-provider';

const port = Number(process.argv[2] || process.env.OIDC_PORT);
if (!Number.isInteger(port) || port <= 0) {
  console.error('usage: node server.mjs PORT (or OIDC_PORT)');
  process.exit(2);
}
const accessTtl = Number(process.env.OIDC_ACCESS_TOKEN_TTL || 3);
const refreshTtl = Number(process.env.OIDC_REFRESH_TOKEN_TTL || 86400);
const issuer = `http://127.0.0.1:${port}`;
const REDIRECT = 'http://127.0.0.1/callback'; // never visited: the code is read from Location

const ccScopes = 'api:read api:write';
const client = (id, extra) => ({
  client_id: id,
  client_secret: `${id}-secret`,
  ...extra,
});
const codeClient = (id, method) => client(id, {
  grant_types: ['authorization_code', 'refresh_token'],
  response_types: ['code'],
  redirect_uris: [REDIRECT],
  token_endpoint_auth_method: method,
});
const ccClient = (id, method) => client(id, {
  grant_types: ['client_credentials'],
  response_types: [],
  redirect_uris: [],
  token_endpoint_auth_method: method,
  scope: ccScopes,
});

const provider = new Provider(issuer, {
  clients: [
    ccClient('sluice-cc', 'client_secret_basic'),
    ccClient('sluice-cc-post', 'client_secret_post'),
    codeClient('sluice-rt', 'client_secret_basic'),
    codeClient('sluice-rt-post', 'client_secret_post'),
    client('sluice-rs', {
      grant_types: [], response_types: [], redirect_uris: [],
      token_endpoint_auth_method: 'client_secret_basic',
    }),
  ],
  scopes: ['openid', 'offline_access', 'api:read', 'api:write', 'api:admin'],
  cookies: { keys: ['sluice-test-cookie-key'] },
  features: {
    devInteractions: { enabled: true }, // the login and consent forms the helper fills in
    clientCredentials: { enabled: true },
    introspection: { enabled: true, allowedPolicy: async () => true },
    revocation: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: async (_ctx, _client, oneOf) => oneOf,
      useGrantedResource: async () => false,
      // Opaque (not JWT) so that introspection answers for it.
      getResourceServerInfo: async (_ctx, resource) => ({
        scope: ccScopes,
        audience: resource,
        accessTokenFormat: 'opaque',
        accessTokenTTL: accessTtl,
      }),
    },
  },
  rotateRefreshToken: true,
  ttl: {
    AccessToken: accessTtl,
    ClientCredentials: accessTtl,
    RefreshToken: refreshTtl,
    Grant: refreshTtl,
    Session: refreshTtl,
    Interaction: 600,
    AuthorizationCode: 600,
    IdToken: accessTtl,
  },
});

// Why a token request failed, beyond the generic error_description oidc-provider answers
// with (e.g. "refresh token already used" when a rotated one comes back).
provider.on('grant.error', (ctx, err) => { ctx.state.errorDetail = err.error_detail; });

const log = [];
let faults = { times: 0 };

const sha = (value) => (value ? createHash('sha256').update(value).digest('hex').slice(0, 16) : undefined);

function stats() {
  const counts = {};
  const presented = {};
  for (const entry of log) {
    counts[entry.grant_type] = (counts[entry.grant_type] || 0) + 1;
    if (entry.refresh_token) presented[entry.refresh_token] = (presented[entry.refresh_token] || 0) + 1;
  }
  const reused = Object.entries(presented).filter(([, n]) => n > 1).map(([t]) => t);
  return { counts, reused_refresh_tokens: reused, requests: log };
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks).toString()));
    req.on('error', reject);
  });
}

function clientOf(ctx, form) {
  const header = ctx.get('authorization');
  if (header.toLowerCase().startsWith('basic ')) {
    const decoded = Buffer.from(header.slice(6), 'base64').toString();
    return { client_id: decodeURIComponent(decoded.split(':')[0]), client_auth: 'basic' };
  }
  return { client_id: form.client_id, client_auth: form.client_secret ? 'body' : 'none' };
}

const strictAuth = {
  'sluice-cc': 'basic', 'sluice-rt': 'basic', 'sluice-cc-post': 'body', 'sluice-rt-post': 'body',
};

function refuse(ctx, entry, status, error, description) {
  ctx.status = status;
  ctx.body = { error, error_description: description };
  Object.assign(entry, { status, error, error_description: description });
  log.push(entry);
  console.log(`token ${JSON.stringify(entry)}`);
}

const sleep = (s) => new Promise((r) => { setTimeout(r, s * 1000); });

// The admin endpoints, and a record of every token request (before oidc-provider reads it:
// the body read here is handed on as ctx.request.body, which its parser accepts).
provider.use(async (ctx, next) => {
  if (ctx.path === '/_admin/stats') {
    if (ctx.method === 'DELETE') log.length = 0;
    ctx.body = stats();
    return;
  }
  if (ctx.path === '/_admin/token_faults' && ctx.method === 'POST') {
    faults = { times: 1, status: 0, error: 'temporarily_unavailable', delay: 0, ...JSON.parse(await readBody(ctx.req) || '{}') };
    ctx.body = faults;
    return;
  }
  if (ctx.path !== '/token' || ctx.method !== 'POST') {
    await next();
    return;
  }
  const raw = await readBody(ctx.req);
  const form = querystring.parse(raw);
  if (form.audience && !form.resource) form.resource = form.audience;
  ctx.request.body = querystring.stringify(form);
  const entry = {
    t: Date.now() / 1000,
    grant_type: form.grant_type,
    ...clientOf(ctx, form),
    scope: form.scope,
    resource: form.resource,
    audience: form.audience,
    refresh_token: sha(form.refresh_token),
  };
  // oidc-provider takes a client_secret_basic client's secret in the form too (and the
  // reverse); a test of `client_auth` needs a server that takes only the registered way.
  const registered = strictAuth[entry.client_id];
  if (registered && entry.client_auth !== 'none' && entry.client_auth !== registered) {
    refuse(ctx, entry, 401, 'invalid_client', `this client authenticates with ${registered} only`);
    return;
  }
  if (faults.times > 0) {
    faults.times -= 1;
    if (faults.delay) await sleep(faults.delay);
    if (faults.status) {
      refuse(ctx, entry, faults.status, faults.error, 'injected by /_admin/token_faults');
      return;
    }
  }
  await next();
  const body = typeof ctx.body === 'object' && ctx.body ? ctx.body : {};
  Object.assign(entry, {
    status: ctx.status,
    error: body.error,
    error_description: body.error_description,
    error_detail: ctx.state.errorDetail,
    issued_refresh_token: sha(body.refresh_token),
    expires_in: body.expires_in,
  });
  log.push(entry);
  console.log(`token ${JSON.stringify(entry)}`);
});

provider.listen(port, '127.0.0.1', () => {
  console.log(`oidc-provider listening on ${issuer}`);
});
