use agentauth::crypto::{Kek, random_bytes};
use agentauth::keys::{self, KeyRing, SigningAlg};
use agentauth::store;

use crate::both;
use crate::helpers::{Backend, TestApp, jwt_parts, serve_args, spawn_app_with};

fn kids(jwks: &serde_json::Value) -> Vec<String> {
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_string())
        .collect()
}

/// Rotation publishes the next key before it signs, and keeps the old key
/// in the JWKS until every token it signed has expired.
async fn key_rotation_publishes_before_use_and_retires_after_expiry(app: TestApp) {
    let (id, secret, first) = app.access_token("read").await;
    let old_kid = jwt_parts(&first).0["kid"].as_str().unwrap().to_string();

    let now = app.now();
    let row = rotate(&app, now).await;
    app.state
        .tokens
        .keys
        .reload(&app.state.db, now)
        .await
        .unwrap();
    let jwks = app.get("/jwks.json").await.json();
    assert_eq!(
        kids(&jwks),
        vec![old_kid.clone(), row.kid.clone()],
        "next key published at once"
    );
    let r = app.token(&id, &secret, &[]).await;
    assert_eq!(
        jwt_parts(r.json()["access_token"].as_str().unwrap()).0["kid"],
        old_kid.as_str(),
        "not yet signing"
    );

    app.clock.advance(600);
    let r = app.token(&id, &secret, &[]).await;
    let second = r.json()["access_token"].as_str().unwrap().to_string();
    assert_eq!(
        jwt_parts(&second).0["kid"],
        row.kid.as_str(),
        "signs after the publish delay"
    );
    // Tokens signed by the old key still verify.
    assert_eq!(app.introspect(&first).await["active"], true);

    // After the longest token lifetime (+ margin) the old key leaves the JWKS.
    app.clock.advance(900 + 61);
    app.state
        .tokens
        .keys
        .reload(&app.state.db, app.now())
        .await
        .unwrap();
    let jwks = app.get("/jwks.json").await.json();
    assert_eq!(kids(&jwks), vec![row.kid.clone()]);
}
both!(key_rotation_publishes_before_use_and_retires_after_expiry);

/// What `agentauth keys rotate` does, under the app's own KEK.
async fn rotate(app: &TestApp, now: i64) -> store::keys::KeyRow {
    let kek = Kek::from_bytes(&app.kek_bytes).unwrap();
    keys::rotate(&app.state.db, &kek, SigningAlg::Rs256, now, 600, 900)
        .await
        .unwrap()
}

/// Private keys are sealed: the stored bytes are not a PKCS#8 key, the
/// public JWK has no private members, and another KEK cannot open them.
async fn signing_keys_are_encrypted_at_rest(app: TestApp) {
    let rows = store::keys::list(&app.state.db).await.unwrap();
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert!(aws_lc_rs::signature::RsaKeyPair::from_pkcs8(&row.private_key_sealed).is_err());
    assert!(row.public_jwk.get("d").is_none());
    assert_eq!(row.alg, "RS256");
    let wrong = Kek::from_bytes(&random_bytes::<32>().unwrap()).unwrap();
    assert!(
        KeyRing::load_or_init(&app.state.db, wrong, SigningAlg::Rs256, app.now(), 900)
            .await
            .is_err()
    );
}
both!(signing_keys_are_encrypted_at_rest);

/// Introspection remembers tokens it has verified, per key set: a repeat is
/// still active, and once the signing key leaves the set (deleted outright
/// here, as after a key compromise) its unexpired token is inactive at once.
async fn remembered_tokens_die_with_their_key(app: TestApp) {
    use sea_orm::EntityTrait;
    let (_, _, token) = app.access_token("read").await;
    let kid = jwt_parts(&token).0["kid"].as_str().unwrap().to_string();
    for _ in 0..2 {
        assert_eq!(app.introspect(&token).await["active"], true);
    }
    // Same keys after a reload: still remembered, still active.
    app.state
        .tokens
        .keys
        .reload(&app.state.db, app.now())
        .await
        .unwrap();
    assert_eq!(app.introspect(&token).await["active"], true);

    let now = app.now();
    rotate(&app, now - 600).await; // signs from now on
    entity::signing_key::Entity::delete_by_id(kid)
        .exec(&app.state.db)
        .await
        .unwrap();
    app.state
        .tokens
        .keys
        .reload(&app.state.db, now)
        .await
        .unwrap();
    assert_eq!(app.introspect(&token).await["active"], false);
    // A token the new key signs is active.
    let (_, _, fresh) = app.access_token("read").await;
    assert_eq!(app.introspect(&fresh).await["active"], true);
}
both!(remembered_tokens_die_with_their_key);

/// `--signing-alg ES256` and `EdDSA`: tokens carry the key's algorithm, the
/// JWKS publishes the key with it, introspection accepts the tokens, and a
/// resource server that knows only the published JWKS verifies them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn es256_and_eddsa_keys_sign_and_verify() {
    use agentauth_resource::{ACCESS_TOKEN_TYP, AccessTokenClaims, StaticKeys, verify_jwt};
    for (alg, kty) in [(SigningAlg::Es256, "EC"), (SigningAlg::EdDsa, "OKP")] {
        for backend in [Backend::Sqlite, Backend::Postgres] {
            let mut args = serve_args();
            args.signing_alg = alg;
            let app = spawn_app_with(backend, args).await;
            let (id, _, token) = app.access_token("read").await;
            let (header, _) = jwt_parts(&token);
            assert_eq!(header["alg"], alg.as_str());
            let jwks = app.get("/jwks.json").await.json();
            let key = &jwks["keys"][0];
            assert_eq!(
                (key["alg"].as_str(), key["kty"].as_str()),
                (Some(alg.as_str()), Some(kty))
            );
            assert!(key.get("d").is_none(), "no private member");
            assert_eq!(app.introspect(&token).await["active"], true);

            let keys = StaticKeys::from_jwks(&serde_json::from_value(jwks).unwrap());
            let claims: AccessTokenClaims =
                verify_jwt(&token, ACCESS_TOKEN_TYP, |kid| keys.get(kid)).unwrap();
            assert_eq!(claims.client_id, id);
        }
    }
}

/// Switching `--signing-alg` generates a key of the new algorithm at start,
/// keeps the old one published until the longest token it signed has
/// expired, then drops it; its tokens verify meanwhile.
async fn switching_algorithm_retires_the_old_key_after_its_tokens(app: TestApp) {
    let (_, _, old_token) = app.access_token("read").await;
    let now = app.now();
    let kek = Kek::from_bytes(&app.kek_bytes).unwrap();
    let ring = KeyRing::load_or_init(&app.state.db, kek, SigningAlg::Es256, now, 900)
        .await
        .unwrap();
    let set = ring.current();
    let signer = set.signer(now).unwrap();
    assert_eq!(signer.alg, SigningAlg::Es256);
    let rows = store::keys::list(&app.state.db).await.unwrap();
    let old = rows.iter().find(|r| r.alg == "RS256").unwrap();
    assert_eq!(old.retire_after, Some(now + 900 + 60));
    assert_eq!(
        kids(&serde_json::from_str(&set.jwks_json).unwrap()).len(),
        2
    );
    assert!(ring.verify_access_token(&old_token).is_ok());
    // The running RS256 node now finds its key retiring but still signing.
    app.state
        .tokens
        .keys
        .reload(&app.state.db, now)
        .await
        .unwrap();
    assert_eq!(app.introspect(&old_token).await["active"], true);

    ring.reload(&app.state.db, now + 961).await.unwrap();
    let jwks: serde_json::Value = serde_json::from_str(&ring.current().jwks_json).unwrap();
    assert_eq!(kids(&jwks), vec![signer.kid.clone()]);
}
both!(switching_algorithm_retires_the_old_key_after_its_tokens);

/// Two nodes; node A rotated in a key node B has not loaded, and signed a
/// token with it.
async fn token_from_a_key_b_has_not_loaded()
-> (crate::helpers::TestApp, crate::helpers::TestApp, String) {
    let (a, b) = crate::helpers::spawn_pg_nodes().await;
    let kek = Kek::from_bytes(&a.kek_bytes).unwrap();
    keys::rotate(&a.state.db, &kek, SigningAlg::Rs256, a.now(), 0, 900)
        .await
        .unwrap();
    a.state
        .tokens
        .keys
        .reload(&a.state.db, a.now())
        .await
        .unwrap();
    let (_, _, token) = a.access_token("read").await;
    (a, b, token)
}

/// A token signed by a key this node has not loaded yet (another node
/// rotated it in, or both nodes started on an empty database and each
/// made one) verifies after one reload, not after the reload interval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_kid_reloads_keys_once() {
    let (_a, b, token) = token_from_a_key_b_has_not_loaded().await;
    assert_eq!(b.introspect(&token).await["active"], true);
    // Forged kids cannot make every request a database read: at most one
    // reload a second.
    assert!(
        !b.state
            .tokens
            .keys
            .reload_for_unknown_kid(&b.state.db, b.now())
            .await
            || {
                !b.state
                    .tokens
                    .keys
                    .reload_for_unknown_kid(&b.state.db, b.now())
                    .await
            }
    );
    assert!(
        !b.state
            .tokens
            .keys
            .reload_for_unknown_kid(&b.state.db, b.now())
            .await
    );
}

/// Many requests at once with a token from a key this node has not
/// loaded: one reloads, the others wait for it, and every one finds the
/// token active (they used to give up while the first reloaded: the soak
/// saw "a fresh token is inactive at the other node" at start-up).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_unknown_kids_wait_for_the_reload() {
    let (_a, b, token) = token_from_a_key_b_has_not_loaded().await;
    let b = std::sync::Arc::new(b);
    let answers = futures_util::future::join_all((0..16).map(|_| {
        let (b, token) = (b.clone(), token.clone());
        tokio::spawn(async move {
            agentauth::tokens::live_access_token(&b.state.tokens, &token)
                .await
                .unwrap()
                .is_some()
        })
    }))
    .await;
    assert!(answers.into_iter().all(|a| a.unwrap()));
}

/// A revocation at a node that has not loaded the token's key yet is not
/// a silent no-op: the node reloads its keys and revokes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_with_an_unknown_kid_reloads_keys() {
    let (a, b) = crate::helpers::spawn_pg_nodes().await;
    let kek = Kek::from_bytes(&a.kek_bytes).unwrap();
    keys::rotate(&a.state.db, &kek, SigningAlg::Rs256, a.now(), 0, 900)
        .await
        .unwrap();
    a.state
        .tokens
        .keys
        .reload(&a.state.db, a.now())
        .await
        .unwrap();
    let (id, secret, token) = a.access_token("read").await;
    let r = b
        .post_form("/revoke", &[("token", &token)], Some((&id, &secret)))
        .await;
    assert_eq!(r.status, 200);
    a.state.tokens.revocations.invalidate();
    assert_eq!(a.introspect(&token).await["active"], false);
}

/// A rotation with no publish delay in the very second the current key
/// began (`keys rotate --publish-delay 0` right after start-up): the new
/// key signs at once, every time, however the random kids sort (found by
/// the Python package's rotation test, about one run in six).
async fn an_immediate_rotation_signs_with_the_new_key(app: TestApp) {
    let kek = Kek::from_bytes(&app.kek_bytes).unwrap();
    for _ in 0..8 {
        let row = keys::rotate(&app.state.db, &kek, SigningAlg::Rs256, app.now(), 0, 900)
            .await
            .unwrap();
        app.state
            .tokens
            .keys
            .reload(&app.state.db, app.now())
            .await
            .unwrap();
        let (_, _, token) = app.access_token("read").await;
        assert_eq!(jwt_parts(&token).0["kid"], row.kid.as_str());
    }
}
both!(an_immediate_rotation_signs_with_the_new_key);
