// node-oidc-provider configured like idp for bench/run.py: one confidential client
// (client_secret_basic; client_credentials, authorization_code and refresh_token), JWT access
// tokens for the `api` resource (resource indicators) signed with the algorithm under test,
// introspection, refresh-token rotation, and idp's endpoint paths so both servers take the same
// wrk scripts.
//
//   NODE_ENV=production node bench/peer/server.mjs --port 4000 --alg ES256 \
//     --client-id bench --client-secret S [--refresh-tokens 32]
//
// Signing keys are generated at start (RS256, ES256 and Ed25519, as idp's default key set; the
// algorithm under test signs access tokens). One JSON line on stdout when listening:
// {"ready": true, "issuer": ..., "user_access_token": ..., "refresh_tokens": [...]}; the user
// access token and the refresh tokens (one grant, so one rotation family, each) are minted through
// the provider's own Grant, AccessToken and RefreshToken models, as the code flow would store them.
// Interactions (sign-in and consent) have no pages: /interaction/<uid> finishes every interaction
// at once as the bench user, granting what the client asked for. The bench goes through it once to
// get a session for the authorization-code scenario; it is not measured. Binds 127.0.0.1 only;
// stops on SIGTERM.

import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';

import Provider from 'oidc-provider';

const { values: args } = parseArgs({
  options: {
    port: { type: 'string', default: '4000' },
    alg: { type: 'string', default: 'RS256' },
    'client-id': { type: 'string', default: 'bench' },
    'client-secret': { type: 'string' },
    'access-token-ttl': { type: 'string', default: '3600' },
    'refresh-tokens': { type: 'string', default: '0' },
  },
});

const ALGS = ['RS256', 'ES256', 'Ed25519'];
if (!ALGS.includes(args.alg)) throw new Error(`--alg must be one of ${ALGS.join(', ')}`);
if (!args['client-secret']) throw new Error('--client-secret is required');

const issuer = `http://127.0.0.1:${args.port}`;
const resource = `${issuer}/api`;
const ttl = Number(args['access-token-ttl']);
const redirectUri = 'http://127.0.0.1:9/callback';

function privateJwk(alg) {
  const options = {
    RS256: ['rsa', { modulusLength: 2048 }],
    ES256: ['ec', { namedCurve: 'P-256' }],
    Ed25519: ['ed25519', {}],
  }[alg];
  const { privateKey } = generateKeyPairSync(...options);
  return { ...privateKey.export({ format: 'jwk' }), alg, use: 'sig' };
}

const accounts = new Map([
  ['bench-user', { sub: 'bench-user', email: 'bench@example.com', email_verified: true, name: 'Bench User' }],
]);

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: args['client-id'],
      client_secret: args['client-secret'],
      token_endpoint_auth_method: 'client_secret_basic',
      grant_types: ['client_credentials', 'authorization_code', 'refresh_token'],
      response_types: ['code'],
      redirect_uris: [redirectUri],
      scope: 'openid profile email offline_access api',
    },
  ],
  cookies: { keys: [randomBytes(32).toString('base64url')] },
  jwks: { keys: [args.alg, ...ALGS.filter((alg) => alg !== args.alg)].map(privateJwk) },
  scopes: ['openid', 'profile', 'email', 'offline_access', 'api'],
  claims: { openid: ['sub'], profile: ['name'], email: ['email', 'email_verified'] },
  findAccount: async (_ctx, id) => {
    const claims = accounts.get(id);
    return claims && { accountId: id, claims: async () => claims };
  },
  // RefreshToken: idp's refresh_token_idle_ttl (each rotation starts it again).
  ttl: { AccessToken: ttl, ClientCredentials: ttl, Grant: 14 * 24 * 3600, RefreshToken: 14 * 24 * 3600 },
  // Both servers rotate: each refresh consumes the token presented and answers a new one (idp
  // always does; RFC 9700 §4.14.2).
  rotateRefreshToken: true,
  // idp's rule: a refresh token with every code exchange of a client allowed the refresh_token
  // grant (node-oidc-provider's default also wants offline_access, granted only with
  // prompt=consent, which would put an interaction in every authorization request).
  issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
  routes: { authorization: '/authorize', introspection: '/introspect', userinfo: '/userinfo', jwks: '/jwks', token: '/token' },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    introspection: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: async () => resource,
      useGrantedResource: async () => true,
      getResourceServerInfo: async (_ctx, indicator) => {
        if (indicator !== resource) throw new Error(`unknown resource ${indicator}`);
        return { scope: 'api', audience: resource, accessTokenTTL: ttl, accessTokenFormat: 'jwt', jwt: { sign: { alg: args.alg } } };
      },
    },
  },
});

// No interaction pages: every interaction ends at once, signed in as the bench user and granting
// whatever the client asked for (the peer's stand-in for idp's sign-in form and first-party
// client, which needs no consent).
provider.use(async (ctx, next) => {
  if (ctx.method !== 'GET' || !/^\/interaction\/[\w-]+$/.test(ctx.path)) return next();
  const { prompt, params, session, grantId } = await provider.interactionDetails(ctx.req, ctx.res);
  const result = {};
  if (prompt.name === 'login') {
    result.login = { accountId: 'bench-user' };
  } else if (prompt.name === 'consent') {
    const grant = grantId
      ? await provider.Grant.find(grantId)
      : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
    const { missingOIDCScope, missingOIDCClaims, missingResourceScopes } = prompt.details;
    if (missingOIDCScope) grant.addOIDCScope(missingOIDCScope.join(' '));
    if (missingOIDCClaims) grant.addOIDCClaims(missingOIDCClaims);
    for (const [indicator, scopes] of Object.entries(missingResourceScopes ?? {})) {
      grant.addResourceScope(indicator, scopes.join(' '));
    }
    result.consent = { grantId: await grant.save() };
  }
  ctx.status = 303;
  ctx.redirect(await provider.interactionResult(ctx.req, ctx.res, result, { mergeWithLastSubmission: false }));
});

async function mintUserAccessToken() {
  const client = await provider.Client.find(args['client-id']);
  const grant = new provider.Grant({ accountId: 'bench-user', clientId: client.clientId });
  grant.addOIDCScope('openid profile email');
  const grantId = await grant.save();
  const token = new provider.AccessToken({
    accountId: 'bench-user',
    client,
    grantId,
    scope: 'openid profile email',
    gty: 'authorization_code',
  });
  return token.save();
}

// A refresh token as the code flow would leave it (scope with openid and offline_access, the `api`
// resource, so refreshing answers a JWT access token and an ID token), in a grant of its own: each
// is the start of one rotation family.
async function mintRefreshToken() {
  const client = await provider.Client.find(args['client-id']);
  const grant = new provider.Grant({ accountId: 'bench-user', clientId: client.clientId });
  grant.addOIDCScope('openid profile email offline_access');
  grant.addResourceScope(resource, 'api');
  const grantId = await grant.save();
  const token = new provider.RefreshToken({
    accountId: 'bench-user',
    authTime: Math.floor(Date.now() / 1000),
    client,
    grantId,
    gty: 'authorization_code',
    resource,
    scope: 'openid profile email offline_access api',
  });
  return token.save();
}

const server = provider.listen(Number(args.port), '127.0.0.1', async () => {
  const userAccessToken = await mintUserAccessToken();
  const refreshTokens = [];
  for (let i = 0; i < Number(args['refresh-tokens']); i += 1) refreshTokens.push(await mintRefreshToken());
  const ready = { ready: true, issuer, user_access_token: userAccessToken, refresh_tokens: refreshTokens };
  process.stdout.write(`${JSON.stringify(ready)}\n`);
});

process.on('SIGTERM', () => server.close(() => process.exit(0)));
process.on('SIGINT', () => server.close(() => process.exit(0)));
