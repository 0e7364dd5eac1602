// node-oidc-provider configured like idp for bench/run.py: one confidential client
// (client_secret_basic; client_credentials and authorization_code), JWT access tokens for the `api`
// resource (resource indicators) signed with the algorithm under test, introspection, and idp's
// endpoint paths so both servers take the same wrk scripts.
//
//   NODE_ENV=production node bench/peer/server.mjs --port 4000 --alg ES256 \
//     --client-id bench --client-secret S
//
// Signing keys are generated at start (RS256, ES256 and Ed25519, as idp's default key set; the
// algorithm under test signs access tokens). One JSON line on stdout when listening:
// {"ready": true, "issuer": ..., "user_access_token": ...}; the user token is minted through the
// provider's own Grant and AccessToken models, as the code flow would store them (no interaction
// pages are benchmarked). Binds 127.0.0.1 only; stops on SIGTERM.

import { generateKeyPairSync } from 'node:crypto';
import { parseArgs } from 'node:util';

import Provider from 'oidc-provider';

const { values: args } = parseArgs({
  options: {
    port: { type: 'string', default: '4000' },
    alg: { type: 'string', default: 'RS256' },
    'client-id': { type: 'string', default: 'bench' },
    'client-secret': { type: 'string' },
    'access-token-ttl': { type: 'string', default: '3600' },
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
      grant_types: ['client_credentials', 'authorization_code'],
      response_types: ['code'],
      redirect_uris: [redirectUri],
      scope: 'openid profile email api',
    },
  ],
  jwks: { keys: [args.alg, ...ALGS.filter((alg) => alg !== args.alg)].map(privateJwk) },
  scopes: ['openid', 'profile', 'email', 'api'],
  claims: { openid: ['sub'], profile: ['name'], email: ['email', 'email_verified'] },
  findAccount: async (_ctx, id) => {
    const claims = accounts.get(id);
    return claims && { accountId: id, claims: async () => claims };
  },
  ttl: { AccessToken: ttl, ClientCredentials: ttl, Grant: 14 * 24 * 3600 },
  routes: { introspection: '/introspect', userinfo: '/userinfo', jwks: '/jwks', token: '/token' },
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

const server = provider.listen(Number(args.port), '127.0.0.1', async () => {
  const userAccessToken = await mintUserAccessToken();
  process.stdout.write(`${JSON.stringify({ ready: true, issuer, user_access_token: userAccessToken })}\n`);
});

process.on('SIGTERM', () => server.close(() => process.exit(0)));
process.on('SIGINT', () => server.close(() => process.exit(0)));
