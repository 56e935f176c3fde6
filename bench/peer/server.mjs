// node-oidc-provider configured for the same work as agentauth's bench:
// a confidential client with client_secret_basic, client_credentials, RS256
// JWT access tokens for a resource indicator, DPoP enabled. node-oidc-provider
// does not introspect JWT access tokens, so a second resource indicator
// (OPAQUE_RESOURCE) gets opaque tokens, for the introspection scenario.
// ALG=ES256 signs with a P-256 key instead (agentauth's --signing-alg ES256).
//
//   PORT=18380 CLIENT_ID=bench CLIENT_SECRET=... RESOURCE=https://mcp.example.com/mcp [ALG=ES256] node server.mjs
import { generateKeyPairSync } from 'node:crypto'
import Provider from 'oidc-provider'

const port = Number(process.env.PORT ?? 18380)
const issuer = `http://127.0.0.1:${port}`
const resource = process.env.RESOURCE ?? 'https://mcp.example.com/mcp'
const opaqueResource = process.env.OPAQUE_RESOURCE ?? 'https://opaque.example.com/mcp'
const alg = process.env.ALG ?? 'RS256'
const { privateKey } = alg === 'ES256'
  ? generateKeyPairSync('ec', { namedCurve: 'P-256' })
  : generateKeyPairSync('rsa', { modulusLength: 2048 })
const jwk = { ...privateKey.export({ format: 'jwk' }), alg, use: 'sig', kid: 'bench' }

const provider = new Provider(issuer, {
  clients: [{
    client_id: process.env.CLIENT_ID ?? 'bench',
    client_secret: process.env.CLIENT_SECRET ?? 'bench-secret',
    grant_types: ['client_credentials'],
    redirect_uris: [],
    response_types: [],
    token_endpoint_auth_method: 'client_secret_basic',
    scope: 'read write',
    // Its default (RS256) must be a key we hold; irrelevant to the bench.
    id_token_signed_response_alg: alg,
  }],
  jwks: { keys: [jwk] },
  scopes: ['read', 'write'],
  // agentauth's default access-token lifetime.
  ttl: { ClientCredentials: 900 },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    introspection: { enabled: true, allowedPolicy: () => true },
    dPoP: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => resource,
      useGrantedResource: () => true,
      getResourceServerInfo: (ctx, indicator) => indicator === opaqueResource
        ? { scope: 'read write', audience: opaqueResource, accessTokenFormat: 'opaque' }
        : { scope: 'read write', audience: resource, accessTokenFormat: 'jwt', jwt: { sign: { alg } } },
    },
  },
})
provider.listen(port, '127.0.0.1', () => console.error(`oidc-provider listening on ${issuer}`))
