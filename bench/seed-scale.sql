-- Issue 34 item 6: a PostgreSQL agentauth database at scale, in minutes
-- (set-based INSERT … SELECT generate_series, one statement per table; no
-- round trip per row). Run on a migrated, empty database:
--
--   psql "$DB" -v owners=10000 -v clients=1000000 -v agents=100000 \
--        -v families=1000000 -v audit=10000000 -f bench/seed-scale.sql
--
-- Rows are shaped as the server writes them (client metadata as JSON,
-- hashes as bytes, Unix seconds), so that the server starts on them and
-- its queries meet realistic tables and indexes. Nobody can sign in as a
-- seeded owner (the password hash is not a PHC string) and no seeded
-- secret is known: the load runs with clients it registers itself.
\set ON_ERROR_STOP on
\timing on
SELECT extract(epoch FROM now())::bigint AS now_s \gset

BEGIN;
INSERT INTO users (id, username, password_hash, created_at, admin)
SELECT 'user-seed-' || g, 'seed-owner-' || g, '!seeded', :now_s, false
FROM generate_series(1, :owners) g;

-- Clients registered with an initial access token (kind initial_token):
-- client_credentials, a secret's hash, the metadata a registration stores.
INSERT INTO clients (client_id, client_secret_hash, registration_access_token_hash,
                     metadata, client_id_issued_at, kind, introspects, updated_at, last_used_at)
SELECT 'seed-client-' || g, sha256(('seed-secret-' || g)::bytea), sha256(('seed-rat-' || g)::bytea),
       jsonb_build_object('redirect_uris', '[]'::jsonb, 'token_endpoint_auth_method', 'client_secret_basic',
                          'grant_types', '["client_credentials"]'::jsonb, 'response_types', '[]'::jsonb,
                          'client_name', 'seed client ' || g, 'scope', 'read',
                          'dpop_bound_access_tokens', false),
       :now_s - (g % 86400), 'initial_token', NULL, :now_s, :now_s - (g % 86400)
FROM generate_series(1, :clients) g;

-- Agents: a client row (kind agent, one Ed25519 public key) and an agents
-- row each, owned round-robin by the seeded owners.
INSERT INTO clients (client_id, client_secret_hash, registration_access_token_hash,
                     metadata, client_id_issued_at, kind, introspects, updated_at, last_used_at)
SELECT 'agent-seed-' || g, NULL, NULL,
       jsonb_build_object('redirect_uris', '[]'::jsonb, 'token_endpoint_auth_method', 'private_key_jwt',
                          'grant_types', '["client_credentials","urn:agentauth:params:grant-type:passport","urn:ietf:params:oauth:grant-type:token-exchange"]'::jsonb,
                          'response_types', '[]'::jsonb, 'client_name', 'seed agent ' || g, 'scope', 'read',
                          'jwks', jsonb_build_object('keys', jsonb_build_array(jsonb_build_object(
                              'kty', 'OKP', 'crv', 'Ed25519', 'kid', 'seed-' || g, 'alg', 'EdDSA',
                              'x', translate(encode(sha256(('seed-key-' || g)::bytea), 'base64'), '+/=', '-_')))),
                          'dpop_bound_access_tokens', false),
       :now_s, 'agent', NULL, :now_s, NULL
FROM generate_series(1, :agents) g;
INSERT INTO agents (id, name, owner_id, status, scope, resources, created_at, updated_at,
                    disabled_at, tokens_valid_after)
SELECT 'agent-seed-' || g, 'seed agent ' || g, 'user-seed-' || (1 + g % :owners), 'active', 'read',
       '[]'::jsonb, :now_s, :now_s, NULL, 0
FROM generate_series(1, :agents) g;

-- Live refresh-token families: one live token each, a client and an owner
-- round-robin, expiring over the next 30 days.
INSERT INTO refresh_tokens (token_hash, family_id, generation, client_id, user_id, scope, resources,
                            dpop_jkt, created_at, expires_at, rotated_at, revoked_at, access_jti,
                            access_exp, retry_sealed)
SELECT sha256(('seed-refresh-' || g)::bytea), 'family-seed-' || g, 0,
       'seed-client-' || (1 + g % :clients), 'user-seed-' || (1 + g % :owners), 'read',
       '["https://mcp.example.com/mcp"]'::jsonb, NULL, :now_s, :now_s + 60 + (g % 2592000), NULL, NULL,
       'jti-seed-' || g, :now_s + 900, NULL
FROM generate_series(1, :families) g;
COMMIT;

-- The audit log: what a busy server writes (token issuance mostly).
INSERT INTO audit_log (at, event, client_id, subject, ip, detail)
SELECT :now_s - (g % 2592000),
       (ARRAY['token.issued', 'token.issued', 'token.issued', 'client.registered', 'user.login'])[1 + g % 5],
       'seed-client-' || (1 + g % :clients), 'user-seed-' || (1 + g % :owners), '192.0.2.' || (g % 250),
       jsonb_build_object('grant_type', 'client_credentials', 'jti', 'audit-seed-' || g, 'exp', :now_s + 900)
FROM generate_series(1, :audit) g;

ANALYZE;
