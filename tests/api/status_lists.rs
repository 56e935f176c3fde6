//! Issue 31, items 1 and 2: every token names an index of a Token Status
//! List (draft-ietf-oauth-status-list); revoking a token, a family, a kill
//! and a user's deletion set the bits; each list is served signed, with
//! `ttl`, `exp`, entity tags, and its JSON form; lists are retired once
//! their tokens have expired; indices never repeat, on any node.

use std::collections::HashSet;

use agentauth_resource::jwt::{StaticKeys, verify_jwt};
use agentauth_resource::status::{StatusList, StatusListClaims, StatusListJson};
use axum::body::Body;
use axum::http::Request;
use serde_json::{Value, json};

use crate::agents::{agent, set_agent_active};
use crate::helpers::{ISSUER, TestApp, TestResponse, jwt_parts, serve_args, spawn_app_with};

const PASSPORT: &str = "urn:agentauth:params:grant-type:passport";
const MCP: &str = "https://mcp.example.com/mcp";

/// The `status` claim of `token`: (uri, idx).
fn status_of(token: &str) -> (String, usize) {
    let (_, claims) = jwt_parts(token);
    let r = &claims["status"]["status_list"];
    (
        r["uri"].as_str().expect("a status uri").to_string(),
        usize::try_from(r["idx"].as_u64().expect("a status idx")).unwrap(),
    )
}

fn path_of(uri: &str) -> &str {
    uri.strip_prefix(ISSUER).expect("a list of ours")
}

async fn get_with(app: &TestApp, path: &str, headers: &[(&str, &str)]) -> TestResponse {
    let mut request = Request::get(path);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    app.send(request.body(Body::empty()).unwrap()).await
}

/// Reads the revocations and lists now, as the refresh task does every
/// half second.
async fn refresh(app: &TestApp) {
    agentauth::state::refresh_revocations(&app.state)
        .await
        .unwrap();
}

/// The list at `uri`, verified against the JWKS: its claims and its bits.
async fn fetch_list(app: &TestApp, uri: &str) -> (StatusListClaims, StatusList) {
    refresh(app).await;
    let r = app.get(path_of(uri)).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("content-type"), Some("application/statuslist+jwt"));
    assert_eq!(r.header("cache-control"), Some("no-cache"));
    let jwt = String::from_utf8(r.body.to_vec()).unwrap();
    let jwks: jsonwebtoken::jwk::JwkSet =
        serde_json::from_slice(&app.get("/jwks.json").await.body).unwrap();
    let keys = StaticKeys::from_jwks(&jwks);
    let claims: StatusListClaims =
        verify_jwt(&jwt, "statuslist+jwt", |kid| keys.get(kid).cloned()).unwrap();
    let list = StatusList::from_json(&claims.status_list, 1 << 24).unwrap();
    (claims, list)
}

async fn bit(app: &TestApp, token: &str) -> u8 {
    let (uri, idx) = status_of(token);
    fetch_list(app, &uri).await.1.get(idx).unwrap()
}

fn ok(r: TestResponse) -> Value {
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    r.json()
}

/// Item 2: a token's list is served signed by our token keys, with the
/// draft's claims; metadata and the aggregation name it.
async fn every_token_names_a_list_we_serve(app: TestApp) {
    let (_, _, token) = app.access_token("").await;
    let (uri, idx) = status_of(&token);
    assert!(uri.starts_with(&format!("{ISSUER}/statuslists/")), "{uri}");
    // The aggregation names the list before anyone has fetched it (the
    // node that issued the token serves its list at once).
    let metadata = app
        .get("/.well-known/oauth-authorization-server")
        .await
        .json();
    assert_eq!(
        metadata["status_list_aggregation_endpoint"],
        format!("{ISSUER}/statuslists")
    );
    let all = ok(app.get("/statuslists").await);
    assert!(
        all["status_lists"]
            .as_array()
            .unwrap()
            .contains(&json!(uri)),
        "{all}"
    );
    let (claims, list) = fetch_list(&app, &uri).await;
    assert_eq!(claims.sub, uri);
    assert_eq!(claims.iss.as_deref(), Some(ISSUER));
    assert_eq!(claims.ttl, Some(10));
    assert!(claims.exp.unwrap() > claims.iat);
    assert_eq!(claims.status_list.bits, 1);
    assert_eq!(list.len(), 1 << 20);
    assert_eq!(list.get(idx), Some(0));
}
crate::both!(every_token_names_a_list_we_serve);

/// RFC 7009 revocation of an access token and of a passport sets their
/// bits and no other.
async fn revoking_a_token_sets_its_bit(app: TestApp) {
    let (id, secret, token) = app.access_token("").await;
    let other = ok(app.token(&id, &secret, &[]).await)["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(bit(&app, &token).await, 0);
    let r = app
        .post_form("/revoke", &[("token", &token)], Some((&id, &secret)))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(bit(&app, &token).await, 1);
    assert_eq!(bit(&app, &other).await, 0);

    let a = agent(&app, "alice", "read", &[]).await;
    let passport = ok(a
        .token(
            &app,
            &[
                ("grant_type", PASSPORT),
                ("audience", "https://site.example"),
            ],
            None,
        )
        .await)["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(bit(&app, &passport).await, 0);
    let r = app
        .post_form(
            "/revoke",
            &[
                ("token", passport.as_str()),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ),
                ("client_assertion", &a.assertion(&app)),
            ],
            None,
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(bit(&app, &passport).await, 1);
}
crate::both!(revoking_a_token_sets_its_bit);

/// A kill sets the bits of everything naming the agent (its token, its
/// passport, a token another agent derived from that passport); the
/// agent's re-enabling clears none; another agent's tokens keep theirs.
async fn a_kill_sets_the_bits_of_what_the_agent_holds(app: TestApp) {
    let a = agent(&app, "alice", "read", &[]).await;
    let b = agent(&app, "alice", "read", &[]).await;
    let token = |r: TestResponse| ok(r)["access_token"].as_str().unwrap().to_string();
    let at = token(
        a.token(
            &app,
            &[("grant_type", "client_credentials"), ("resource", MCP)],
            None,
        )
        .await,
    );
    let passport = token(
        a.token(&app, &[("grant_type", PASSPORT), ("audience", &b.id)], None)
            .await,
    );
    let derived = token(
        b.token(
            &app,
            &[
                (
                    "grant_type",
                    "urn:ietf:params:oauth:grant-type:token-exchange",
                ),
                ("subject_token", &passport),
                (
                    "subject_token_type",
                    "urn:agentauth:params:token-type:passport",
                ),
                ("resource", MCP),
            ],
            None,
        )
        .await,
    );
    let bystander = token(
        b.token(
            &app,
            &[("grant_type", "client_credentials"), ("resource", MCP)],
            None,
        )
        .await,
    );
    for t in [&at, &passport, &derived, &bystander] {
        assert_eq!(bit(&app, t).await, 0);
    }
    set_agent_active(&app, &a.id, false).await;
    for t in [&at, &passport, &derived] {
        assert_eq!(bit(&app, t).await, 1);
    }
    assert_eq!(bit(&app, &bystander).await, 0);
    set_agent_active(&app, &a.id, true).await;
    for t in [&at, &passport, &derived] {
        assert_eq!(bit(&app, t).await, 1, "re-enabling clears nothing");
    }
}
crate::both!(a_kill_sets_the_bits_of_what_the_agent_holds);

/// A token recorded after the kill's own pass (a node with a stale view
/// of the agent issued it) is revoked by its recorder, which reads the
/// agent after its commit.
async fn a_token_recorded_after_a_kill_is_revoked_by_its_recorder(app: TestApp) {
    let a = agent(&app, "alice", "read", &[]).await;
    // The kill commits first; this node has not heard of it (its cache is
    // warm), so it issues.
    let warm = a
        .token(
            &app,
            &[("grant_type", "client_credentials"), ("resource", MCP)],
            None,
        )
        .await;
    ok(warm);
    set_agent_active(&app, &a.id, false).await;
    let r = a
        .token(
            &app,
            &[("grant_type", "client_credentials"), ("resource", MCP)],
            None,
        )
        .await;
    let late = ok(r)["access_token"].as_str().unwrap().to_string();
    assert_eq!(bit(&app, &late).await, 1);
}
crate::both!(a_token_recorded_after_a_kill_is_revoked_by_its_recorder);

/// Revoking a refresh token revokes its family's access tokens, by index.
async fn a_revoked_family_sets_the_bits_of_its_access_tokens(app: TestApp) {
    use crate::code_flow::{Browser, exchange, get_code, pkce, public_client, user};
    user(&app, "alice").await;
    let client_id = public_client(&app).await;
    let browser = Browser::new(&app);
    let (verifier, challenge) = pkce();
    let code = get_code(&app, &browser, &client_id, &challenge).await;
    let tokens = ok(exchange(&app, &client_id, &code, &verifier).await);
    let access = tokens["access_token"].as_str().unwrap();
    let refresh_token = tokens["refresh_token"].as_str().unwrap();
    assert_eq!(bit(&app, access).await, 0);
    let r = app
        .post_form(
            "/revoke",
            &[("token", refresh_token), ("client_id", &client_id)],
            None,
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(bit(&app, access).await, 1);
}
crate::both!(a_revoked_family_sets_the_bits_of_its_access_tokens);

/// Deleting a user sets the bits of their grants' tokens and of every
/// token naming one of their agents.
async fn deleting_a_user_sets_the_bits_of_everything_theirs(app: TestApp) {
    let a = agent(&app, "dora", "read", &[]).await;
    let at = ok(a
        .token(
            &app,
            &[("grant_type", "client_credentials"), ("resource", MCP)],
            None,
        )
        .await)["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(bit(&app, &at).await, 0);
    assert!(
        agentauth::store::users::delete(
            &app.state.db,
            "dora",
            app.now(),
            agentauth::store::users::deleted_event(app.now(), "test"),
        )
        .await
        .unwrap()
        .is_some()
    );
    assert_eq!(bit(&app, &at).await, 1);
}
crate::both!(deleting_a_user_sets_the_bits_of_everything_theirs);

/// HTTP: entity tags and 304, the JSON form when asked, 404 for a list
/// that is not (or no longer) served, whatever the id looks like.
async fn lists_are_cacheable_and_have_a_json_form(app: TestApp) {
    let (_, _, token) = app.access_token("").await;
    let (uri, idx) = status_of(&token);
    refresh(&app).await;
    let path = path_of(&uri);
    let first = app.get(path).await;
    let etag = first.header("etag").unwrap().to_string();
    assert!(etag.starts_with('"'), "strong: {etag}");
    let again = get_with(&app, path, &[("if-none-match", &etag)]).await;
    assert_eq!(again.status, 304);
    assert!(again.body.is_empty());
    let other = get_with(&app, path, &[("if-none-match", "\"nope\"")]).await;
    assert_eq!(other.status, 200);

    let json = get_with(&app, path, &[("accept", "application/statuslist+json")]).await;
    assert_eq!(json.status, 200);
    assert_eq!(
        json.header("content-type"),
        Some("application/statuslist+json")
    );
    assert_ne!(json.header("etag"), Some(etag.as_str()));
    let list: StatusListJson = serde_json::from_slice(&json.body).unwrap();
    assert_eq!(
        StatusList::from_json(&list, 1 << 24).unwrap().get(idx),
        Some(0)
    );
    // Both acceptable: the signed form.
    let both = get_with(
        &app,
        path,
        &[(
            "accept",
            "application/statuslist+json, application/statuslist+jwt",
        )],
    )
    .await;
    assert_eq!(
        both.header("content-type"),
        Some("application/statuslist+jwt")
    );

    for missing in [
        "/statuslists/999999",
        "/statuslists/0",
        "/statuslists/01",
        "/statuslists/-1",
        "/statuslists/x",
    ] {
        let r = app.get(missing).await;
        assert_eq!(r.status, 404, "{missing}");
        assert_eq!(r.json()["error"], "not_found");
    }
}
crate::both!(lists_are_cacheable_and_have_a_json_form);

/// A list is retired once every token indexed in it has expired: no
/// longer served or aggregated; new tokens name a new list.
async fn lists_are_retired_after_their_last_token_expires(app: TestApp) {
    let (id, secret, token) = app.access_token("").await;
    let (uri, _) = status_of(&token);
    // Past the block's window, the longest token lifetime and the margin.
    app.clock.advance(60 + 900 + 60 + 1);
    agentauth::store::purge_expired(&app.state.db, app.now())
        .await
        .unwrap();
    refresh(&app).await;
    assert_eq!(app.get(path_of(&uri)).await.status, 404);
    let all = ok(app.get("/statuslists").await);
    assert!(
        !all["status_lists"]
            .as_array()
            .unwrap()
            .contains(&json!(uri))
    );
    let fresh = ok(app.token(&id, &secret, &[]).await)["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let (new_uri, _) = status_of(&fresh);
    assert_ne!(new_uri, uri);
    assert_eq!(bit(&app, &fresh).await, 0);
}
crate::both!(lists_are_retired_after_their_last_token_expires);

/// Property: however many callers on however many nodes allocate at once,
/// from lists small enough to fill, no (list, index) is handed out twice,
/// and every index lies inside its list.
async fn indices_are_unique_across_nodes_under_concurrency(app: TestApp) {
    let mut args = serve_args();
    args.status_list_size = 2048;
    let nodes = match app.backend {
        crate::helpers::Backend::Postgres => {
            let (a, b) = crate::helpers::spawn_pg_nodes_with(|a| a.status_list_size = 2048).await;
            vec![a, b]
        }
        crate::helpers::Backend::Sqlite => vec![spawn_app_with(app.backend, args).await],
    };
    let mut tasks = Vec::new();
    for (n, node) in nodes.iter().enumerate() {
        for _ in 0..8 {
            let state = node.state.clone();
            let clock_start = node.now();
            tasks.push(tokio::spawn(async move {
                let mut got = Vec::new();
                for i in 0..700 {
                    // Time moves on: some blocks are abandoned half used.
                    let now = clock_start + i64::from(i / 100) * 61 * i64::from(n as u8 + 1);
                    let (s, claim) = state.tokens.status.allocate(now).await.unwrap();
                    assert_eq!(state.tokens.status.uri(s.list), claim.status_list.uri);
                    assert_eq!(u64::try_from(s.idx).unwrap(), claim.status_list.idx);
                    got.push((s.list, s.idx));
                }
                got
            }));
        }
    }
    let mut seen = HashSet::new();
    let mut lists = HashSet::new();
    for t in tasks {
        for (list, idx) in t.await.unwrap() {
            assert!((0..2048).contains(&idx), "{idx} outside the list");
            assert!(seen.insert((list, idx)), "({list}, {idx}) handed out twice");
            lists.insert(list);
        }
    }
    assert_eq!(seen.len(), nodes.len() * 8 * 700);
    assert!(lists.len() > 2, "small lists fill and roll over: {lists:?}");
}
crate::both!(indices_are_unique_across_nodes_under_concurrency);

/// Two nodes: a kill on one is in the other's list after its next read.
async fn a_kill_on_one_node_is_in_every_nodes_list() {
    let (a, b) = crate::helpers::spawn_pg_nodes().await;
    let agent = agent(&a, "erin", "read", &[]).await;
    let at = ok(agent
        .token(
            &a,
            &[("grant_type", "client_credentials"), ("resource", MCP)],
            None,
        )
        .await)["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(bit(&b, &at).await, 0);
    set_agent_active(&a, &agent.id, false).await;
    assert_eq!(bit(&b, &at).await, 1);
    assert_eq!(bit(&a, &at).await, 1);
}

#[tokio::test]
async fn a_kill_on_one_node_is_in_every_nodes_list_pg() {
    a_kill_on_one_node_is_in_every_nodes_list().await;
}

/// A list token is signed by our token keys, but it is no access token:
/// introspection, and a resource using the kit, refuse it by its `typ`.
async fn a_list_token_is_not_an_access_token(app: TestApp) {
    let (_, _, token) = app.access_token("").await;
    let (uri, _) = status_of(&token);
    refresh(&app).await;
    let list = String::from_utf8(app.get(path_of(&uri)).await.body.to_vec()).unwrap();
    assert_eq!(app.introspect(&list).await, json!({"active": false}));
    let jwks: jsonwebtoken::jwk::JwkSet =
        serde_json::from_slice(&app.get("/jwks.json").await.body).unwrap();
    let keys = StaticKeys::from_jwks(&jwks);
    assert!(
        verify_jwt::<Value, _>(&list, "at+jwt", |kid| keys.get(kid).cloned()).is_err(),
        "the kit's JWT check pins at+jwt"
    );
}
crate::both!(a_list_token_is_not_an_access_token);
