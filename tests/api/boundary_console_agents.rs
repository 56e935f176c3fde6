//! Item 2 of issue 28: agents an owner makes in the console get no more than the resource registry and the operator allow.
//! SECURITY.md maps each case here to the attack it covers.
//!
//! A console agent (kind `owner_agent`) asks only for scopes some resource
//! offers and names only registered resources; it gets tokens with no user
//! (`client_credentials`) only where a resource's operator lists
//! `owner_agent`; a console agent limited to one resource gets nothing
//! for another by any grant that names a resource (client_credentials,
//! token exchange, the passport grant's `audience`, jwt-bearer for a
//! workload and for an identity assertion). With `--signup` a stranger's
//! agent is such an agent. Agents an operator made keep
//! `client_credentials` where the registry's default list allows agents.

use std::io::Write as _;

use serde_json::{Value, json};

use crate::agents::{Agent, agent};
use crate::code_flow::{Browser, PASSWORD, hidden, location};
use crate::helpers::{
    Backend, ISSUER, TestApp, TestResponse, fresh_db, jwt_parts, serve_args, spawn_app_on,
};
use crate::private_key_jwt::client_key;

const PASSPORT: &str = "urn:agentauth:params:grant-type:passport";
const PASSPORT_TYPE: &str = "urn:agentauth:params:token-type:passport";
const EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const TOOLS: &str = "https://tools.example.com/mcp";
const FILES: &str = "https://files.example.com/";

/// Tools keeps the default `client_credentials` list (the vouched kinds:
/// operator, initial_token, agent); Files' operator lets console agents
/// act on their own there. Both take passports, so that only the agent's
/// own limits decide a passport's audience.
const FILE: &str = r#"
[[resource]]
uri = "https://tools.example.com/mcp"
name = "Tools"
scopes = ["tools:read", "tools:call"]
accept_passports = true

[[resource]]
uri = "https://files.example.com/"
name = "Files"
scopes = ["files:read"]
client_credentials = ["operator", "agent", "owner_agent"]
accept_passports = true
"#;

fn resources_file() -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(FILE.as_bytes()).unwrap();
    file
}

/// The registry above, as the server builds it from the file.
fn registry() -> agentauth::resources::ResourceRegistry {
    agentauth::resources::ResourceRegistry::build(agentauth::resources::Sources {
        file: Some(FILE),
        flags: &[],
        scopes: None,
        default_audience: ISSUER,
        default_audience_set: true,
        open: false,
        issuer: Some(ISSUER),
    })
    .unwrap()
}

/// A node with the registry above and open sign-up.
async fn registry_app(backend: Backend) -> TestApp {
    crate::helpers::spawn_app_with_resources(backend, FILE, |args| args.signup = true).await
}

macro_rules! with_registry {
    ($name:ident) => {
        crate::both_with!(registry_app, $name);
    };
}

/// A stranger signs up (`--signup`) and is signed in.
async fn stranger<'a>(app: &'a TestApp, name: &str) -> Browser<'a> {
    let browser = Browser::new(app);
    let page = browser.get("/signup").await;
    let r = browser
        .post(
            "/signup",
            &[
                ("csrf_token", &hidden(&page, "csrf_token")),
                ("username", name),
                ("password", PASSWORD),
            ],
        )
        .await;
    assert_eq!(location(&r), "/account");
    browser
}

/// Posts the console's new-agent form.
async fn create_in_console(
    browser: &Browser<'_>,
    scope: &str,
    resources: &str,
    key: &Value,
) -> TestResponse {
    let form = browser.get("/account/agents/new").await;
    assert_eq!(form.status, 200);
    browser
        .post(
            "/account/agents",
            &[
                ("csrf_token", &hidden(&form, "csrf_token")),
                ("name", "helper"),
                ("scope", scope),
                ("resources", resources),
                ("key", &key.to_string()),
            ],
        )
        .await
}

/// A console agent that was created: its id (from the redirect) and key.
async fn console_agent(browser: &Browser<'_>, scope: &str, resources: &str) -> Agent {
    let key = client_key(&format!("k-{}", agentauth::crypto::random_id().unwrap()));
    let r = create_in_console(browser, scope, resources, &key.jwk).await;
    assert_eq!(r.status, 303, "{}", String::from_utf8_lossy(&r.body));
    let id = location(&r)
        .trim_start_matches("/account/agents/")
        .to_string();
    Agent { id, key }
}

/// A URI as the pages write it (minijinja escapes `/`).
fn escaped(uri: &str) -> String {
    uri.replace('/', "&#x2f;")
}

fn html(r: &TestResponse) -> String {
    String::from_utf8_lossy(&r.body).to_string()
}

async fn agents_of(app: &TestApp, username: &str) -> Vec<agentauth::store::agents::AgentRow> {
    let owner = agentauth::store::users::by_username(&app.state.db, username)
        .await
        .unwrap()
        .unwrap();
    agentauth::store::agents::list(&app.state.db, Some(&owner.id))
        .await
        .unwrap()
}

fn ok(r: TestResponse) -> Value {
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    r.json()
}

/// The form says what an agent made here may do and lists the registered
/// resources; scopes no resource offers, scopes the chosen resources do
/// not offer, unregistered resources and agents as resources are refused
/// on the page (400, the form filled in again, the reason in an alert),
/// and no agent is created.
async fn console_agents_are_bounded_by_the_registry(app: TestApp) {
    let mallory = stranger(&app, "mallory").await;
    let form = mallory.get("/account/agents/new").await;
    let page = html(&form);
    assert!(page.contains("What the agent will be able to do"), "{page}");
    assert!(
        page.contains(&escaped(TOOLS)) && page.contains("tools:read tools:call"),
        "{page}"
    );

    let key = client_key("k1").jwk;
    let cases = [
        (
            "admin",
            "",
            "scope &quot;admin&quot; is not offered by any resource registered at this server",
        ),
        (
            "tools:read",
            FILES,
            "scope &quot;tools:read&quot; is not offered by the resources you chose",
        ),
        (
            "files:read",
            "https://evil.example/api",
            "is not a resource registered at this server",
        ),
        (
            "files:read",
            &format!("{ISSUER}/agents/agent-someone"),
            "is not a resource registered at this server",
        ),
    ];
    for (scope, resources, why) in cases {
        let r = create_in_console(&mallory, scope, resources, &key).await;
        assert_eq!(r.status, 400, "{scope} {resources}: {}", html(&r));
        assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
        let page = html(&r);
        assert!(
            page.contains("role=\"alert\"") && page.contains(why),
            "{page}"
        );
        assert!(
            page.contains("value=\"helper\""),
            "the form is filled in again"
        );
    }
    assert!(agents_of(&app, "mallory").await.is_empty());

    // Offered scopes, a registered resource in another spelling: created,
    // kind owner_agent, the resource recorded as registered.
    let a = console_agent(&mallory, "tools:read", "https://TOOLS.example.com/mcp").await;
    let rows = agents_of(&app, "mallory").await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].resources, vec![TOOLS.to_string()]);
    let client = app.state.clients.get(&a.id).await.unwrap().unwrap();
    assert_eq!(client.kind.as_str(), "owner_agent");
    let page = html(&mallory.get(&format!("/account/agents/{}", a.id)).await);
    assert!(
        page.contains("id=\"unattended\">nowhere"),
        "its page says it acts on its own nowhere: {page}"
    );
}
with_registry!(console_agents_are_bounded_by_the_registry);

/// A console agent's `client_credentials`: refused (400
/// unauthorized_client) for a resource with the default kind list and for
/// the default audience; granted, with only the scopes offered there, by
/// the resource whose operator lists `owner_agent`. An agent an operator
/// made keeps `client_credentials` for the default list.
async fn console_agents_act_alone_only_where_the_operator_allows(app: TestApp) {
    let mallory = stranger(&app, "mallory").await;
    let a = console_agent(&mallory, "tools:read tools:call files:read", "").await;
    let body = a
        .token(
            &app,
            &[("grant_type", "client_credentials"), ("resource", TOOLS)],
            None,
        )
        .await
        .assert_error(400, "unauthorized_client");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("owner_agent"),
        "{body}"
    );
    a.token(&app, &[("grant_type", "client_credentials")], None)
        .await
        .assert_error(400, "unauthorized_client");

    let t = ok(a
        .token(
            &app,
            &[("grant_type", "client_credentials"), ("resource", FILES)],
            None,
        )
        .await);
    assert_eq!(t["scope"], "files:read");
    let (_, claims) = jwt_parts(t["access_token"].as_str().unwrap());
    assert_eq!(claims["aud"], FILES);
    assert_eq!(claims["agent_id"], a.id);
    a.token(
        &app,
        &[
            ("grant_type", "client_credentials"),
            ("resource", FILES),
            ("scope", "tools:read"),
        ],
        None,
    )
    .await
    .assert_error(400, "invalid_scope");
    let page = html(&mallory.get(&format!("/account/agents/{}", a.id)).await);
    assert!(
        page.contains(&format!("at <code>{}</code>", escaped(FILES))),
        "{page}"
    );

    // Without client_credentials it still proves who it is: a passport.
    let p = ok(a
        .token(&app, &[("grant_type", PASSPORT), ("audience", TOOLS)], None)
        .await);
    assert_eq!(p["issued_token_type"], PASSPORT_TYPE);

    // Its own passport traded for an access token is client_credentials
    // by another name (no person took part): refused where the operator
    // does not let console agents act alone, allowed where it does.
    let own = ok(a.token(&app, &[("grant_type", PASSPORT)], None).await);
    let own = own["access_token"].as_str().unwrap();
    let trade = |resource: &'static str| {
        [
            ("grant_type", EXCHANGE),
            ("subject_token", own),
            ("subject_token_type", PASSPORT_TYPE),
            ("resource", resource),
        ]
    };
    a.token(&app, &trade(TOOLS), None)
        .await
        .assert_error(400, "unauthorized_client");
    let t = ok(a.token(&app, &trade(FILES), None).await);
    let (_, claims) = jwt_parts(t["access_token"].as_str().unwrap());
    assert_eq!(claims["aud"], FILES);
    assert_eq!(claims["agent_id"], a.id);

    // An operator's agent: client_credentials where agents are listed.
    let cli = agent(&app, "alice", "tools:read", &[]).await;
    let t = ok(cli
        .token(
            &app,
            &[("grant_type", "client_credentials"), ("resource", TOOLS)],
            None,
        )
        .await);
    assert_eq!(t["scope"], "tools:read");
    assert_eq!(
        app.state
            .clients
            .get(&cli.id)
            .await
            .unwrap()
            .unwrap()
            .kind
            .as_str(),
        "agent"
    );
}
with_registry!(console_agents_act_alone_only_where_the_operator_allows);

/// A console agent limited to Tools asks for Files by every grant that
/// names a resource it can use here: client_credentials (Files lets
/// console agents act alone, so only the agent's limit refuses), token
/// exchange of its own passport (`resource` and `audience`), and a
/// passport whose `audience` is Files: each `invalid_target`. The same
/// requests for Tools succeed.
async fn console_agents_reach_only_their_resources(app: TestApp) {
    let mallory = stranger(&app, "mallory").await;
    let a = console_agent(&mallory, "tools:read", TOOLS).await;

    a.token(
        &app,
        &[("grant_type", "client_credentials"), ("resource", FILES)],
        None,
    )
    .await
    .assert_error(400, "invalid_target");

    let body = a
        .token(&app, &[("grant_type", PASSPORT), ("audience", FILES)], None)
        .await
        .assert_error(400, "invalid_target");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("may not get tokens for"),
        "{body}"
    );
    let p = ok(a
        .token(&app, &[("grant_type", PASSPORT), ("audience", TOOLS)], None)
        .await);
    let (_, claims) = jwt_parts(p["access_token"].as_str().unwrap());
    assert_eq!(claims["aud"], TOOLS);

    // Its own passport (no audience: an identity) traded for a token.
    let own = ok(a.token(&app, &[("grant_type", PASSPORT)], None).await);
    let own = own["access_token"].as_str().unwrap();
    for target in [("resource", FILES), ("audience", FILES)] {
        a.token(
            &app,
            &[
                ("grant_type", EXCHANGE),
                ("subject_token", own),
                ("subject_token_type", PASSPORT_TYPE),
                target,
            ],
            None,
        )
        .await
        .assert_error(400, "invalid_target");
    }
    // For Tools, its own resource, the agent's limit lets it through; the
    // operator's kind rule does not (a passport traded for a token is
    // client_credentials by another name, and Tools does not list
    // owner_agent): see console_agents_act_alone_only_where_the_operator_allows.
    a.token(
        &app,
        &[
            ("grant_type", EXCHANGE),
            ("subject_token", own),
            ("subject_token_type", PASSPORT_TYPE),
            ("resource", TOOLS),
        ],
        None,
    )
    .await
    .assert_error(400, "unauthorized_client");

    // A sibling with no limits, trading the limited agent's passport, acts
    // for it: no further than the limited agent may reach.
    let sibling = console_agent(&mallory, "files:read tools:read", "").await;
    let for_sibling = format!("{}/agents/{}", app.state.config.issuer, sibling.id);
    let passport = ok(a
        .token(
            &app,
            &[("grant_type", PASSPORT), ("audience", &for_sibling)],
            None,
        )
        .await);
    let passport = passport["access_token"].as_str().unwrap();
    sibling
        .token(
            &app,
            &[
                ("grant_type", EXCHANGE),
                ("subject_token", passport),
                ("subject_token_type", PASSPORT_TYPE),
                ("resource", FILES),
            ],
            None,
        )
        .await
        .assert_error(400, "invalid_target");
}
with_registry!(console_agents_reach_only_their_resources);

/// The same limit at the JWT bearer grant (RFC 7523 §2.1): a workload
/// token mapped to a console agent limited to Tools gets no access token
/// and no passport for Files; the agent presenting a user's identity
/// assertion (ID-JAG) for Files gets nothing either. The agent is made as
/// the console makes it (`create_by_owner`, before the node starts, so
/// that the federation file can name it).
async fn console_agents_reach_only_their_resources_by_jwt_bearer(backend: Backend) {
    let ci = client_key("ci-key");
    let idp = client_key("idp-key");
    let base = crate::code_flow::document_server(vec![
        ("/ci/jwks", json!({ "keys": [ci.jwk] }), "max-age=60"),
        ("/idp/jwks", json!({ "keys": [idp.jwk] }), "max-age=60"),
    ])
    .await;
    let (db, dir) = fresh_db(backend).await;
    let now = 1_800_000_000;
    let mallory =
        agentauth::accounts::create_user(&db, "mallory@example.com", PASSWORD.into(), now)
            .await
            .unwrap();
    let registry = registry();
    let key = client_key("agent-key");
    let (row, _) = agentauth::agents::create_by_owner(
        &db,
        &agentauth::grants::Registry::standard(),
        &registry,
        agentauth::agents::NewAgent {
            name: "deployer".into(),
            owner_id: mallory.id.clone(),
            scope: agentauth::oauth::scope::Scope::parse("tools:read").unwrap(),
            resources: vec![TOOLS.into()],
            keys: jsonwebtoken::jwk::JwkSet {
                keys: vec![agentauth::agents::check_key(&key.jwk).unwrap()],
            },
        },
        now,
        &mallory.id,
    )
    .await
    .unwrap();
    let mut federation = tempfile::NamedTempFile::new().unwrap();
    write!(
        federation,
        r#"
[[workload]]
issuer = "https://ci.example"
jwks_uri = "{base}/ci/jwks"
algorithms = ["ES256"]

[[workload.rule]]
agent = "{agent}"
claims = {{ repository = "acme/app" }}

[[idp]]
issuer = "https://idp.example"
jwks_uri = "{base}/idp/jwks"
"#,
        agent = row.id
    )
    .unwrap();
    let file = resources_file();
    let mut args = serve_args();
    args.resources = Vec::new();
    args.resources_file = Some(file.path().to_path_buf());
    args.insecure_fetch = true;
    args.federation_file = Some(federation.path().to_path_buf());
    let app = spawn_app_on(backend, db, dir, args).await;
    let a = Agent { id: row.id, key };

    let workload = || {
        ci.assertion(json!({
            "iss": "https://ci.example", "aud": ISSUER, "sub": "repo:acme/app",
            "repository": "acme/app",
            "jti": agentauth::crypto::random_id().unwrap(), "iat": app.now(), "exp": app.now() + 300,
        }))
    };
    let bearer = |assertion: String, extra: Vec<(&'static str, &'static str)>| {
        let app = &app;
        async move {
            let mut pairs = vec![
                ("grant_type", JWT_BEARER),
                ("assertion", assertion.as_str()),
            ];
            pairs.extend(extra);
            app.post_form("/token", &pairs, None).await
        }
    };
    bearer(workload(), vec![("resource", FILES)])
        .await
        .assert_error(400, "invalid_target");
    let t = ok(bearer(workload(), vec![("resource", TOOLS)]).await);
    assert_eq!(
        jwt_parts(t["access_token"].as_str().unwrap()).1["aud"],
        TOOLS
    );

    let job_key = crate::dpop::ProofKey::new();
    let r = app
        .post_form_with_dpop(
            "/token",
            &[
                ("grant_type", JWT_BEARER),
                ("assertion", &workload()),
                ("requested_token_type", PASSPORT_TYPE),
                ("audience", FILES),
            ],
            &job_key.proof(&app),
        )
        .await;
    r.assert_error(400, "invalid_target");

    // The agent as a client, with a user's identity assertion for Files.
    let jag = |resource: &str| {
        idp.sign_typed(
            "oauth-id-jag+jwt",
            json!({"iss": "https://idp.example", "aud": ISSUER, "sub": "u-1",
                   "email": "mallory@example.com", "client_id": a.id, "scope": "tools:read",
                   "resource": resource,
                   "jti": agentauth::crypto::random_id().unwrap(), "iat": app.now(),
                   "exp": app.now() + 300}),
        )
    };
    let files_jag = jag(FILES);
    a.token(
        &app,
        &[("grant_type", JWT_BEARER), ("assertion", &files_jag)],
        None,
    )
    .await
    .assert_error(400, "invalid_target");
    let tools_jag = jag(TOOLS);
    let t = ok(a
        .token(
            &app,
            &[("grant_type", JWT_BEARER), ("assertion", &tools_jag)],
            None,
        )
        .await);
    assert_eq!(
        jwt_parts(t["access_token"].as_str().unwrap()).1["aud"],
        TOOLS
    );
    drop(file);
}

mod console_agents_reach_only_their_resources_by_jwt_bearer {
    use crate::helpers::Backend;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        super::console_agents_reach_only_their_resources_by_jwt_bearer(Backend::Sqlite).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        super::console_agents_reach_only_their_resources_by_jwt_bearer(Backend::Postgres).await
    }
}

/// Agents made in the console before `owner_agent` existed were stored as
/// `agent`: the migration finds them by their `agent.created` audit row,
/// whose actor is their owner (the CLI writes `cli`, `/register` the
/// caller's address), and makes them `owner_agent`; an operator's agent
/// stays `agent`.
async fn existing_console_agents_become_owner_agents(app: TestApp) {
    use migration::MigratorTrait;
    use sea_orm::{ConnectionTrait, Statement};
    let mallory = stranger(&app, "mallory").await;
    let console = console_agent(&mallory, "files:read", "").await;
    let cli = agent(&app, "alice", "files:read", &[]).await;
    let backend = app.state.db.get_database_backend();
    app.state
        .db
        .execute(Statement::from_string(
            backend,
            "UPDATE clients SET kind = 'agent'",
        ))
        .await
        .unwrap();
    // Back to before m0013 (and the migrations after it, however many
    // there are by now), then up again.
    let since_m0013 = u32::try_from(migration::Migrator::migrations().len() - 12).unwrap();
    migration::Migrator::down(&app.state.db, Some(since_m0013))
        .await
        .unwrap();
    migration::Migrator::up(&app.state.db, None).await.unwrap();
    let kind = |id: String| {
        let db = app.state.db.clone();
        async move {
            agentauth::store::clients::get(&db, &id)
                .await
                .unwrap()
                .unwrap()
                .kind
                .as_str()
        }
    };
    assert_eq!(kind(console.id.clone()).await, "owner_agent");
    assert_eq!(kind(cli.id.clone()).await, "agent");
}
with_registry!(existing_console_agents_become_owner_agents);

#[test]
fn resources_file_names_the_owner_agent_kind() {
    let registry = registry();
    let files = registry.get(FILES).unwrap();
    assert!(
        files
            .client_credentials
            .contains(&agentauth::oauth::client_kind::ClientKind::OwnerAgent)
    );
    assert!(
        !registry
            .get(TOOLS)
            .unwrap()
            .client_credentials
            .contains(&agentauth::oauth::client_kind::ClientKind::OwnerAgent),
        "not vouched for: off unless listed"
    );
}
