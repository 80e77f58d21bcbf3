// A real OpenID Connect provider (oidc-provider) on 127.0.0.1 that stands in for Google in authsvc's tests.
//
//   node tests/oidc/provider.mjs PORT      (or OIDC_PORT=PORT)   ->  prints "READY http://127.0.0.1:PORT"
//
// Issuer http://127.0.0.1:PORT; discovery, JWKS (an RS256 key made at start), dynamic registration at /reg
// (no initial access token), authorization code + PKCE S256 only. Every authorization shows this file's own
// login page, then its consent page (never a remembered session or grant), so each run is predictable:
//   login   form#login-form: #email, #email_verified (checkbox, value "true"), #sub (optional), #name (optional);
//           button #login-submit
//   consent form#consent-allow-form with button #consent-allow;
//           form#consent-deny-form with button #consent-deny (the client gets error=access_denied)
// Accounts live in memory keyed by sub; the sub defaults to sha256(lower-cased email), first 24 hex digits.
// Client metadata `id_token_ttl` (seconds) sets the lifetime of the ID tokens issued to that client.
// OIDC_PROVIDER_WATCH_STDIN=1: exit when stdin closes (the controlling test process went away).
import { createHash, generateKeyPairSync, randomBytes } from 'node:crypto';
import http from 'node:http';

import Provider, { errors, interactionPolicy } from 'oidc-provider';

const port = Number(process.argv[2] ?? process.env.OIDC_PORT);
if (!Number.isInteger(port) || port <= 0 || port > 65535) {
  console.error('usage: node provider.mjs PORT (or OIDC_PORT=PORT)');
  process.exit(2);
}
const issuer = `http://127.0.0.1:${port}`;

const accounts = new Map(); // sub -> { sub, email, email_verified, name }

function defaultSub(email) {
  return createHash('sha256').update(email.trim().toLowerCase()).digest('hex').slice(0, 24);
}

function signingKey() {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const kid = randomBytes(8).toString('hex');
  return { ...privateKey.export({ format: 'jwk' }), kid, alg: 'RS256', use: 'sig' };
}

// Always ask for a login unless this very authorization request has just completed one, so a browser that
// signed in before still sees the login page (like choosing a Google account every time).
const policy = interactionPolicy.base();
policy.get('login').checks.add(new interactionPolicy.Check(
  'fresh_login', 'each authorization request signs in anew',
  (ctx) => (ctx.oidc.result?.login ? interactionPolicy.Check.NO_NEED_TO_PROMPT
    : interactionPolicy.Check.REQUEST_PROMPT),
));

const provider = new Provider(issuer, {
  clients: [],
  jwks: { keys: [signingKey()] },
  cookies: { keys: [randomBytes(32).toString('hex')] },
  scopes: ['openid', 'email', 'profile'],
  claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name'] },
  conformIdTokenClaims: false, // scope-derived claims (email, name) go into the ID token, as Google's do
  responseTypes: ['code'],
  pkce: { required: () => true },
  enabledJWA: { idTokenSigningAlgValues: ['RS256'] },
  features: {
    devInteractions: { enabled: false },
    registration: { enabled: true, initialAccessToken: false },
    rpInitiatedLogout: { enabled: false },
  },
  extraClientMetadata: {
    properties: ['id_token_ttl'],
    validator(ctx, key, value) {
      if (key === 'id_token_ttl' && value !== undefined && !(Number.isInteger(value) && value > 0)) {
        throw new errors.InvalidClientMetadata('id_token_ttl must be a positive integer (seconds)');
      }
    },
  },
  ttl: {
    AccessToken: 3600,
    AuthorizationCode: 60,
    Grant: 3600,
    IdToken: (ctx, token, client) => client.id_token_ttl ?? 3600,
    Interaction: 600,
    Session: 3600,
  },
  interactions: { policy, url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  // Only a grant made by this authorization's own consent counts: the consent page shows every time.
  loadExistingGrant: async (ctx) => {
    const grantId = ctx.oidc.result?.consent?.grantId;
    return grantId ? ctx.oidc.provider.Grant.find(grantId) : undefined;
  },
  async findAccount(ctx, sub) {
    const account = accounts.get(sub);
    if (!account) return undefined;
    return { accountId: sub, claims: () => ({ ...account }) };
  },
});

provider.on('server_error', (ctx, err) => console.error('server_error', ctx.path, err));

// --- the interaction pages ---------------------------------------------------------------------------------

const esc = (s) => String(s ?? '').replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function page(res, status, title, body) {
  res.writeHead(status, { 'Content-Type': 'text/html; charset=utf-8', 'Cache-Control': 'no-store' });
  res.end(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>${esc(title)}</title></head>
<body><h1>${esc(title)}</h1>
${body}
</body></html>
`);
}

function loginPage(res, uid, params, { status = 200, error = '', values = {} } = {}) {
  page(res, status, 'Test provider: sign in', `${error ? `<p id="error" role="alert">${esc(error)}</p>` : ''}
<p>Client <code id="client-id">${esc(params.client_id)}</code> asks you to sign in.</p>
<form id="login-form" method="post" action="/interaction/${esc(uid)}/login">
  <p><label for="email">Email</label> <input id="email" name="email" type="text"
     value="${esc(values.email ?? params.login_hint ?? '')}"></p>
  <p><label><input id="email_verified" name="email_verified" type="checkbox" value="true"
     ${values.email_verified === false ? '' : 'checked'}> Email verified</label></p>
  <p><label for="sub">Subject (optional)</label> <input id="sub" name="sub" type="text" value="${esc(values.sub)}"></p>
  <p><label for="name">Name (optional)</label> <input id="name" name="name" type="text" value="${esc(values.name)}"></p>
  <p><button id="login-submit" type="submit">Sign in</button></p>
</form>`);
}

function consentPage(res, uid, params, details, account) {
  const scopes = [...(details.missingOIDCScope ?? [])].join(' ');
  page(res, 200, 'Test provider: consent', `
<p><span id="account-email">${esc(account?.email)}</span>: allow client <code id="client-id">${esc(params.client_id)}</code>
 to see <span id="scopes">${esc(scopes || params.scope)}</span>?</p>
<form id="consent-allow-form" method="post" action="/interaction/${esc(uid)}/confirm">
  <button id="consent-allow" type="submit">Allow</button>
</form>
<form id="consent-deny-form" method="post" action="/interaction/${esc(uid)}/abort">
  <button id="consent-deny" type="submit">Deny</button>
</form>`);
}

async function formBody(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return Object.fromEntries(new URLSearchParams(Buffer.concat(chunks).toString('utf8')));
}

const TRUE = new Set(['true', 'on', '1', 'yes']);

async function interaction(req, res, uid, action) {
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) throw new errors.SessionNotFound('interaction mismatch');
  const { prompt, params } = details;

  if (req.method === 'GET' && !action) {
    if (prompt.name === 'login') return loginPage(res, uid, params);
    if (prompt.name === 'consent') {
      return consentPage(res, uid, params, prompt.details, accounts.get(details.session?.accountId));
    }
    return page(res, 400, 'Test provider: error', `<p id="error">unexpected prompt ${esc(prompt.name)}</p>`);
  }
  if (req.method !== 'POST') return page(res, 405, 'Method not allowed', '');

  const form = await formBody(req);
  if (action === 'login' && prompt.name === 'login') {
    const email = (form.email ?? '').trim();
    const values = {
      email, email_verified: TRUE.has(String(form.email_verified).toLowerCase()),
      sub: (form.sub ?? '').trim(), name: (form.name ?? '').trim(),
    };
    if (!email) return loginPage(res, uid, params, { status: 400, error: 'email is required', values });
    const sub = values.sub || defaultSub(email);
    accounts.set(sub, {
      sub, email, email_verified: values.email_verified, ...(values.name ? { name: values.name } : {}),
    });
    const result = { login: { accountId: sub } };
    return provider.interactionFinished(req, res, result, { mergeWithLastSubmission: false });
  }
  if (action === 'confirm' && prompt.name === 'consent') {
    const grant = details.grantId ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: details.session.accountId, clientId: params.client_id });
    if (prompt.details.missingOIDCScope) grant.addOIDCScope(prompt.details.missingOIDCScope.join(' '));
    if (prompt.details.missingOIDCClaims) grant.addOIDCClaims(prompt.details.missingOIDCClaims);
    for (const [indicator, scopes] of Object.entries(prompt.details.missingResourceScopes ?? {})) {
      grant.addResourceScope(indicator, scopes.join(' '));
    }
    const grantId = await grant.save();
    // merged with the login of this same request, which the fresh_login check looks for
    return provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
  }
  if (action === 'abort') {
    return provider.interactionFinished(req, res, {
      error: 'access_denied', error_description: 'End-User aborted interaction',
    }, { mergeWithLastSubmission: false });
  }
  const why = `${action} does not fit prompt ${prompt.name}`;
  return page(res, 400, 'Test provider: error', `<p id="error">${esc(why)}</p>`);
}

const INTERACTION = /^\/interaction\/([A-Za-z0-9_-]+)(?:\/(login|confirm|abort))?\/?$/;
const oidc = provider.callback();

const server = http.createServer((req, res) => {
  const match = INTERACTION.exec(new URL(req.url, issuer).pathname);
  if (!match) return oidc(req, res);
  return interaction(req, res, match[1], match[2]).catch((err) => {
    const status = err instanceof errors.SessionNotFound ? 400 : 500;
    if (status === 500) console.error('interaction error', err);
    if (!res.headersSent) {
      const why = `${err.error ?? err.name}: ${err.error_description ?? err.message}`;
      page(res, status, 'Test provider: error', `<p id="error">${esc(why)}</p>`);
    } else res.end();
  });
});

function shutdown() {
  server.close();
  server.closeAllConnections();
  process.exit(0);
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
if (process.env.OIDC_PROVIDER_WATCH_STDIN === '1') {
  process.stdin.on('end', shutdown).on('error', shutdown).resume();
}

server.on('error', (err) => {
  console.error(`cannot listen on 127.0.0.1:${port}: ${err.code ?? err.message}`);
  process.exit(err.code === 'EADDRINUSE' ? 3 : 1);
});
server.listen(port, '127.0.0.1', () => console.log(`READY ${issuer}`));
