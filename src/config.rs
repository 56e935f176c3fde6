//! Command line and configuration: flags and `AGENTAUTH_*` environment
//! variables, parsed by clap and validated once into [`Config`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use url::Url;

use crate::keys::SigningAlg;
use crate::oauth::scope::Scope;

#[derive(Debug, Parser)]
#[command(
    name = "agentauth",
    version,
    about = "OAuth 2.1 authorization server for AI agents and MCP servers",
    long_about = "OAuth 2.1 authorization server for AI agents and MCP servers.\n\n\
        Without a subcommand, `agentauth` runs `serve`. Every flag can also be set \
        from the environment variable named beside it."
)]
pub struct Cli {
    #[command(flatten)]
    pub storage: StorageArgs,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Args, Clone)]
pub struct StorageArgs {
    /// Database URL: a SQLite file (created if missing) or postgres://user@host/db.
    #[arg(
        long,
        env = "DATABASE_URL",
        global = true,
        default_value = "sqlite://agentauth.db?mode=rwc"
    )]
    pub database_url: String,

    /// Key-encryption key for signing keys at rest: 32 bytes, base64.
    /// Required with PostgreSQL (all nodes must share it) unless --kek-file is set.
    #[arg(long, env = "AGENTAUTH_KEK", global = true, hide_env_values = true)]
    pub kek: Option<String>,

    /// File holding the key-encryption key (created with mode 0600 if missing).
    /// Default with SQLite: `<database file>.kek` beside the database.
    #[arg(long, env = "AGENTAUTH_KEK_FILE", global = true)]
    pub kek_file: Option<PathBuf>,

    /// Maximum database connections in the pool.
    #[arg(
        long,
        env = "AGENTAUTH_DB_MAX_CONNECTIONS",
        global = true,
        default_value_t = 16
    )]
    pub db_max_connections: u32,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the authorization server (the default).
    Serve(ServeArgs),
    /// Print the resource registry that `serve` would use with these
    /// flags (checking the resources file), and exit.
    Resources(ServeArgs),
    /// Apply database migrations and exit.
    Migrate,
    /// Manage OAuth clients and initial access tokens.
    #[command(subcommand)]
    Client(ClientCommand),
    /// List or rotate token-signing keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// List or rotate the bridge-certificate CA epochs.
    #[command(subcommand)]
    Ca(CaCommand),
    /// Manage agents: identities owned by a user, holding their own keys.
    #[command(subcommand)]
    Agent(AgentCommand),
    /// Manage human owner accounts (they sign in and consent).
    #[command(subcommand)]
    User(UserCommand),
    /// Manage security event receivers: sites and resources that keep
    /// sessions, pushed a signed CAEP event (RFC 8935) when an agent is
    /// disabled or deleted, loses a key, or a consent is withdrawn or a
    /// user deleted.
    #[command(subcommand)]
    Receiver(ReceiverCommand),
}

#[derive(Debug, Subcommand)]
pub enum ReceiverCommand {
    /// Register a receiver and print its id. Events are queued for it
    /// from now on; every server node pushes them.
    Add {
        /// Its push endpoint (RFC 8935): https, on a public address.
        #[arg(long)]
        endpoint: String,
        /// The `aud` of the SETs pushed to it (what it checks).
        #[arg(long)]
        aud: String,
        /// The `Authorization` header value presented with every push
        /// (e.g. "Bearer …"), stored sealed under the key-encryption key
        /// and never shown again. Prefer the environment variable to the
        /// flag (the command line is visible to other local users).
        #[arg(long, env = "AGENTAUTH_RECEIVER_AUTHORIZATION", hide_env_values = true)]
        authorization: Option<String>,
        /// Allow plain http on loopback (tests only; refused by a release build).
        #[arg(
            long = "insecure-fetch-for-tests-only",
            env = "AGENTAUTH_INSECURE_FETCH_FOR_TESTS_ONLY",
            hide = true
        )]
        insecure_fetch: bool,
    },
    /// List receivers with their pending, failed, dropped and delivered
    /// counts and last error.
    List {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Remove a receiver and everything queued for it.
    Remove { id: String },
}

#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// List the CA epochs and their state.
    List,
    /// Start the next epoch now: a new CA issues at once (every node
    /// within 5 s); the previous CA stays in the bundle unless
    /// --drop-previous.
    Rotate {
        /// Also take every older CA out of the trust bundle: certificates
        /// it issued stop verifying wherever the bundle is re-read.
        #[arg(long)]
        drop_previous: bool,
        /// The servers' issuer (names the CA).
        #[arg(
            long,
            env = "AGENTAUTH_ISSUER",
            default_value = "http://127.0.0.1:8080"
        )]
        issuer: String,
        /// The servers' --ca-epoch.
        #[arg(long, env = "AGENTAUTH_CA_EPOCH", default_value_t = 86_400)]
        ca_epoch: u32,
    },
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user. The password is read from AGENTAUTH_PASSWORD or, if
    /// unset, from the first line of standard input.
    Create {
        username: String,
        /// An operator: may see the operator pages (clients, keys, CA
        /// epochs, the audit log).
        #[arg(long)]
        admin: bool,
    },
    /// List users.
    List,
    /// Delete a user and their sessions.
    Delete { username: String },
    /// Set a user's password (read like `create`).
    SetPassword { username: String },
}

#[derive(Debug, Args, Clone)]
pub struct ServeArgs {
    /// Issuer identifier (RFC 8414): the exact string in metadata and in every token.
    #[arg(
        long,
        env = "AGENTAUTH_ISSUER",
        default_value = "http://127.0.0.1:8080"
    )]
    pub issuer: String,

    /// Address to listen on.
    #[arg(long, env = "AGENTAUTH_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Access-token lifetime in seconds.
    #[arg(long, env = "AGENTAUTH_ACCESS_TOKEN_TTL", default_value_t = 900)]
    pub access_token_ttl: u32,

    /// Agent passport lifetime in seconds (60 to 86400); default: the
    /// access-token lifetime. Resources that verify offline accept a
    /// passport until it expires, even after its agent is disabled.
    #[arg(long, env = "AGENTAUTH_PASSPORT_TTL")]
    pub passport_ttl: Option<u32>,

    /// Token status lists: the `ttl` of each list token, in seconds (1 to
    /// 3600): how long a verifier may keep a list before fetching it
    /// again, and so how long a revocation takes to reach it.
    #[arg(long, env = "AGENTAUTH_STATUS_LIST_TTL", default_value_t = 10)]
    pub status_list_ttl: u32,

    /// Token status lists: indices per list (1,024 to 16,777,216, a
    /// multiple of 1,024). A list is retired once every token indexed in it
    /// has expired.
    #[arg(long, env = "AGENTAUTH_STATUS_LIST_SIZE", default_value_t = 1 << 20)]
    pub status_list_size: u32,

    /// Proof-of-work login: how long a login request waits for its agent,
    /// in seconds (30 to 3600).
    #[arg(long, env = "AGENTAUTH_LOGIN_REQUEST_TTL", default_value_t = 300)]
    pub login_request_ttl: u32,

    /// Proof-of-work login: leading zero bits of SHA-256(challenge ‖
    /// nonce) an agent must find (8 to 32); raised automatically for a
    /// site or agent that asks for many challenges.
    #[arg(long, env = "AGENTAUTH_POW_DIFFICULTY", default_value_t = 15)]
    pub pow_difficulty: u32,

    /// Proof-of-work login: least seconds between a site's polls of one
    /// request (faster polls get `slow_down`).
    #[arg(long, env = "AGENTAUTH_LOGIN_POLL_INTERVAL", default_value_t = 5)]
    pub login_poll_interval: u32,

    /// Backchannel approval requests (CIBA): seconds a request waits for
    /// its owner's answer when the client asks for no `requested_expiry`
    /// (30 to 3600; a client may ask for less, never for more).
    #[arg(long, env = "AGENTAUTH_CIBA_EXPIRY", default_value_t = 300)]
    pub ciba_expiry: u32,

    /// Backchannel approval requests: least seconds between a poll-mode
    /// client's polls of one request (1 to 60; faster polls get
    /// `slow_down`, which adds 5 seconds).
    #[arg(long, env = "AGENTAUTH_CIBA_INTERVAL", default_value_t = 2)]
    pub ciba_interval: u32,

    /// Backchannel approval requests: most pending requests one client (an
    /// agent) may have open at once.
    #[arg(long, env = "AGENTAUTH_CIBA_MAX_PER_CLIENT", default_value_t = 5)]
    pub ciba_max_per_client: u32,

    /// Backchannel approval requests: most pending requests waiting for one
    /// owner, all clients together.
    #[arg(long, env = "AGENTAUTH_CIBA_MAX_PER_OWNER", default_value_t = 20)]
    pub ciba_max_per_owner: u32,

    /// Lifetime in seconds of a token issued for approved authorization
    /// details (one approved action; 30 to 300).
    #[arg(long, env = "AGENTAUTH_APPROVAL_TOKEN_TTL", default_value_t = 300)]
    pub approval_token_ttl: u32,

    /// Self-registered (open DCR) clients that get no token for this many
    /// seconds, and hold no consent and no live refresh token, are
    /// deleted by the upkeep task (default 30 days; 0: never).
    #[arg(long, env = "AGENTAUTH_IDLE_CLIENT_TTL", default_value_t = 2_592_000)]
    pub idle_client_ttl: u64,

    /// Proof-of-work login: most pending requests one site may have open.
    #[arg(long, env = "AGENTAUTH_MAX_OPEN_LOGIN_REQUESTS", default_value_t = 100)]
    pub max_open_login_requests: u32,

    /// Proof-of-work login: requests per minute one site may create, and
    /// one agent may make (challenge reads and answers), per node (429
    /// with Retry-After beyond).
    #[arg(
        long = "login-rate",
        env = "AGENTAUTH_LOGIN_RATE",
        default_value_t = 120
    )]
    pub login_rate_per_minute: u32,

    /// Proof-of-work challenges one party (a site, an agent, or an address
    /// registering under `--registration pow`) may ask for per minute at
    /// the base difficulty; each doubling beyond adds a bit (at most 8).
    #[arg(
        long = "pow-free-rate",
        env = "AGENTAUTH_POW_FREE_RATE",
        default_value_t = 10
    )]
    pub pow_free_per_minute: u32,

    /// Proof-of-work login: let sites nobody vouched for (registered at
    /// open /register, or client ID metadata documents) create login
    /// requests. Off by default: only sites an operator created or that
    /// registered with an initial access token may. Agents see such a
    /// site's name marked unverified.
    #[arg(long, env = "AGENTAUTH_POW_LOGIN_UNVOUCHED")]
    pub pow_login_unvouched: bool,

    /// Proof-of-work login: most open event streams on this node, all
    /// sites together (429 with Retry-After beyond).
    #[arg(long, env = "AGENTAUTH_LOGIN_STREAMS", default_value_t = 10_000)]
    pub login_streams: u32,

    /// Proof-of-work login: most open event streams one site may hold on
    /// this node (429 with Retry-After beyond).
    #[arg(long, env = "AGENTAUTH_LOGIN_STREAMS_PER_SITE", default_value_t = 200)]
    pub login_streams_per_site: u32,

    /// Bridge certificates: seconds each CA epoch issues before the next
    /// one starts (the previous CA stays in the bundle one more epoch).
    #[arg(long, env = "AGENTAUTH_CA_EPOCH", default_value_t = 86_400)]
    pub ca_epoch: u32,

    /// Bridge certificates: lifetime in seconds (60 to 3600).
    #[arg(long, env = "AGENTAUTH_BRIDGE_CERT_TTL", default_value_t = 300)]
    pub bridge_cert_ttl: u32,

    /// Longest delegation chain a token exchange may produce (actors in
    /// `act`, the new one included).
    #[arg(long, env = "AGENTAUTH_MAX_DELEGATION_DEPTH", default_value_t = 3)]
    pub max_delegation_depth: u32,

    /// Refresh-token lifetime in seconds (each rotation starts a new one).
    #[arg(long, env = "AGENTAUTH_REFRESH_TOKEN_TTL", default_value_t = 2_592_000)]
    pub refresh_token_ttl: u32,

    /// Seconds after a refresh token's rotation during which the same client
    /// (with the same DPoP key, when bound) may present it again and get the
    /// pair the rotation issued, instead of having the family revoked. 0
    /// turns the window off; at most 300.
    #[arg(long, env = "AGENTAUTH_REFRESH_GRACE_PERIOD", default_value_t = 30)]
    pub refresh_grace_period: u32,

    /// Seconds between a node's re-reads of the signing keys (keys another
    /// node or `keys rotate` added, keys retired). A token with an unknown
    /// `kid` also triggers one re-read. 1 to 3600.
    #[arg(long, env = "AGENTAUTH_KEY_RELOAD_INTERVAL", default_value_t = 60)]
    pub key_reload_interval: u32,

    /// Who may register clients at /register: anyone, or only holders of an
    /// initial access token (`agentauth client initial-token`).
    #[arg(long, env = "AGENTAUTH_REGISTRATION", value_enum, default_value_t = RegistrationMode::Open)]
    pub registration: RegistrationMode,

    /// Let people create their own owner accounts at /signup.
    #[arg(long, env = "AGENTAUTH_SIGNUP")]
    pub signup: bool,

    /// Registrations allowed per client IP per minute (429 beyond).
    #[arg(long, env = "AGENTAUTH_REGISTRATION_RATE", default_value_t = 30)]
    pub registration_rate_per_minute: u32,

    /// Distinct client ID metadata documents one client address may make
    /// us fetch per minute (documents already cached cost nothing).
    #[arg(long, env = "AGENTAUTH_DOCUMENT_FETCH_RATE", default_value_t = 20)]
    pub document_fetch_rate_per_minute: u32,

    /// Space-separated scopes of the default audience and of each
    /// --resource. Clients may register these and those of the resources
    /// file; with neither, any well-formed scope.
    #[arg(long, env = "AGENTAUTH_SCOPES", default_value = "")]
    pub scopes: String,

    /// Register a protected resource (an MCP server's URI) offering
    /// --scopes (any scope if --scopes is empty): the quick start, with no
    /// file. Repeatable;
    /// comma-separated in the environment.
    #[arg(long = "resource", env = "AGENTAUTH_RESOURCES", value_delimiter = ',')]
    pub resources: Vec<String>,

    /// TOML file of protected resources: each one's `uri`, `name`,
    /// `scopes` and the client kinds that may get its tokens by
    /// client_credentials (see README, "Resources").
    #[arg(long, env = "AGENTAUTH_RESOURCES_FILE")]
    pub resources_file: Option<PathBuf>,

    /// TOML file of trusted external issuers for the JWT bearer grant
    /// (RFC 7523): workload issuers (CI, Kubernetes) whose tokens map to
    /// agents by claim rules, and IdPs whose identity assertions
    /// (oauth-id-jag+jwt) map to users (see README, "Federation").
    #[arg(long, env = "AGENTAUTH_FEDERATION_FILE")]
    pub federation_file: Option<PathBuf>,

    /// Accept any absolute `resource` URI as an audience, registered or
    /// not (scopes of unregistered resources are then unchecked). Off by
    /// default: an unregistered resource is `invalid_target`.
    #[arg(long, env = "AGENTAUTH_OPEN_RESOURCES")]
    pub open_resources: bool,

    /// Audience of access tokens requested without `resource` (default: the issuer).
    #[arg(long, env = "AGENTAUTH_DEFAULT_AUDIENCE")]
    pub default_audience: Option<String>,

    /// Require DPoP server nonces (RFC 9449 §8): proofs must carry a nonce
    /// the server issued, valid across nodes that share the KEK.
    #[arg(long, env = "AGENTAUTH_DPOP_NONCE")]
    pub dpop_nonce: bool,

    /// Accepted distance, in seconds, between a DPoP proof's `iat` and the
    /// server clock, in either direction.
    #[arg(long, env = "AGENTAUTH_DPOP_IAT_WINDOW", default_value_t = 60)]
    pub dpop_iat_window: u32,

    /// Threads that make RSA signatures, behind one FIFO queue (default: one
    /// per core). 0 signs on the async workers instead: 5 to 10% more peak
    /// token throughput, but JWKS, metadata and introspection then wait
    /// behind token minting.
    #[arg(long, env = "AGENTAUTH_SIGNING_THREADS")]
    pub signing_threads: Option<usize>,

    /// Algorithm of the token-signing key: RS256 (what every client
    /// verifies), ES256 or EdDSA (about ten times the signing rate). Keys of
    /// other algorithms stay in the JWKS until their tokens expire. Every node
    /// must use the same value.
    #[arg(long, env = "AGENTAUTH_SIGNING_ALG", value_enum, default_value_t = SigningAlg::Rs256)]
    pub signing_alg: SigningAlg,

    /// Origins whose pages may call /register, /token, /introspect and
    /// /revoke from a browser (CORS), comma-separated; `*` allows any. The
    /// metadata and JWKS are readable from any origin; the HTML pages from
    /// none.
    #[arg(
        long,
        env = "AGENTAUTH_CORS_ALLOWED_ORIGINS",
        value_delimiter = ',',
        default_value = "*"
    )]
    pub cors_allowed_origins: Vec<String>,

    /// Reverse proxies whose `X-Forwarded-For` is believed (IPs or CIDRs,
    /// comma-separated), so that rate limits and the audit log see the
    /// client's address. From anyone else the header is ignored.
    #[arg(long, env = "AGENTAUTH_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<String>,

    /// Serve /metrics on this separate address (e.g. 127.0.0.1:9090) and
    /// not on --listen.
    #[arg(long, env = "AGENTAUTH_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    /// Require `Authorization: Bearer <token>` at /metrics.
    #[arg(long, env = "AGENTAUTH_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,

    /// Log format.
    #[arg(long, env = "AGENTAUTH_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Allow fetching client metadata documents, `jwks_uri`s and resource
    /// metadata over plain http and from loopback or private addresses.
    /// For tests only: it disables the SSRF guards, and a release build
    /// refuses to start with it.
    #[arg(
        long = "insecure-fetch-for-tests-only",
        env = "AGENTAUTH_INSECURE_FETCH_FOR_TESTS_ONLY",
        hide = true
    )]
    pub insecure_fetch: bool,
}

impl Default for ServeArgs {
    fn default() -> Self {
        Self {
            issuer: "http://127.0.0.1:8080".into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            access_token_ttl: 900,
            passport_ttl: None,
            status_list_ttl: 10,
            status_list_size: 1 << 20,
            login_request_ttl: 300,
            pow_difficulty: 15,
            login_poll_interval: 5,
            max_open_login_requests: 100,
            ciba_expiry: 300,
            ciba_interval: 2,
            ciba_max_per_client: 5,
            ciba_max_per_owner: 20,
            approval_token_ttl: 300,
            login_rate_per_minute: 120,
            pow_free_per_minute: 10,
            pow_login_unvouched: false,
            login_streams: 10_000,
            login_streams_per_site: 200,
            ca_epoch: 86_400,
            bridge_cert_ttl: 300,
            idle_client_ttl: 2_592_000,
            max_delegation_depth: 3,
            refresh_token_ttl: 2_592_000,
            refresh_grace_period: 30,
            key_reload_interval: 60,
            registration: RegistrationMode::Open,
            registration_rate_per_minute: 30,
            signup: false,
            document_fetch_rate_per_minute: 20,
            scopes: String::new(),
            resources: Vec::new(),
            resources_file: None,
            federation_file: None,
            open_resources: false,
            default_audience: None,
            dpop_nonce: false,
            dpop_iat_window: 60,
            signing_threads: None,
            signing_alg: SigningAlg::Rs256,
            metrics_listen: None,
            metrics_token: None,
            cors_allowed_origins: vec!["*".into()],
            trusted_proxies: Vec::new(),
            log_format: LogFormat::Text,
            insecure_fetch: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RegistrationMode {
    Open,
    Protected,
    /// Open, but each registration without an initial access token
    /// carries a proof-of-work stamp (`GET /register/challenge`).
    Pow,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Register a client directly in the database and print its credentials once.
    Create(ClientCreateArgs),
    /// List registered clients.
    List,
    /// Show one client's metadata.
    Show { client_id: String },
    /// The connection doctor: the client's recent authorization steps,
    /// oldest first, each refusal with its reason and what would fix it
    /// (`--attempt` picks the steps of one attempt, the id an error page
    /// shows).
    Trace {
        client_id: String,
        #[arg(long)]
        attempt: Option<String>,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Delete a client.
    Delete { client_id: String },
    /// Mint an initial access token for protected registration (printed once).
    InitialToken {
        /// Lifetime in seconds (default: no expiry).
        #[arg(long)]
        expires_in: Option<u32>,
        /// How many registrations it allows (default: 1).
        #[arg(long, default_value_t = 1)]
        uses: u32,
        /// A username: registrations with this token create agents that
        /// user owns (they must send their public keys in `jwks`).
        #[arg(long)]
        owner: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// Create an agent and print its id (its client_id at /token).
    Create(AgentCreateArgs),
    /// List agents (of one owner with --owner).
    List {
        #[arg(long)]
        owner: Option<String>,
    },
    /// Show one agent, its keys and status.
    Show { agent_id: String },
    /// Add public keys (a JWK or JWK set file; `-` reads standard input).
    AddKey {
        agent_id: String,
        #[arg(long)]
        jwk: PathBuf,
    },
    /// Remove the key with this kid (an agent keeps at least one).
    RemoveKey { agent_id: String, kid: String },
    /// The kill switch: the agent's tokens and passports turn inactive
    /// on every node within a second, and its grants are refused.
    Disable { agent_id: String },
    /// Undo `disable`.
    Enable { agent_id: String },
    /// Delete the agent (its tokens turn inactive with it).
    Delete { agent_id: String },
}

#[derive(Debug, Args)]
pub struct AgentCreateArgs {
    /// The owner's username.
    #[arg(long)]
    pub owner: String,
    #[arg(long)]
    pub name: String,
    /// Space-separated scopes the agent may ask for.
    #[arg(long, default_value = "")]
    pub scope: String,
    /// A resource the agent may get tokens for (repeatable; none: any
    /// registered resource).
    #[arg(long = "resource")]
    pub resources: Vec<String>,
    /// Its public key(s): a JWK or JWK set file, Ed25519 or P-256; `-`
    /// reads standard input. Repeatable.
    #[arg(long, required = true)]
    pub jwk: Vec<PathBuf>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ClientCreateArgs {
    /// Human-readable client name.
    #[arg(long)]
    pub name: String,
    /// Grant type the client may use (repeatable).
    #[arg(long = "grant-type", default_value = "client_credentials")]
    pub grant_types: Vec<String>,
    /// Space-separated scopes the client may request.
    #[arg(long)]
    pub scope: Option<String>,
    /// Redirect URI (repeatable; required for authorization_code).
    #[arg(long = "redirect-uri")]
    pub redirect_uris: Vec<String>,
    /// Token endpoint authentication method.
    #[arg(long, default_value = "client_secret_basic")]
    pub auth_method: String,
    /// Let the client introspect (RFC 7662) tokens whose audience includes
    /// this resource URI: the client is that resource server. Repeatable;
    /// `*` makes it an introspector for every token.
    #[arg(long)]
    pub introspect: Vec<String>,
    /// Print the result as one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// List signing keys and their state.
    List,
    /// Publish a new signing key; it starts signing after the publish delay.
    Rotate {
        /// Seconds the new key is published before it signs (default: 600,
        /// longer than the JWKS cache lifetime plus the nodes' key reload interval).
        #[arg(long, default_value_t = 600)]
        publish_delay: u32,
        /// Lifetime of the longest access token, which decides how long the
        /// old key stays in the JWKS after the new one takes over.
        #[arg(long, env = "AGENTAUTH_ACCESS_TOKEN_TTL", default_value_t = 900)]
        access_token_ttl: u32,
        /// Algorithm of the new key (the servers' --signing-alg).
        #[arg(long, env = "AGENTAUTH_SIGNING_ALG", value_enum, default_value_t = SigningAlg::Rs256)]
        signing_alg: SigningAlg,
    },
}

/// Validated server configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The issuer string, byte for byte (no trailing slash).
    pub issuer: String,
    pub listen: SocketAddr,
    pub access_token_ttl: i64,
    pub refresh_token_ttl: i64,
    pub passport_ttl: i64,
    /// Seconds a verifier may keep a status list (its `ttl`).
    pub status_list_ttl: i64,
    /// Indices per status list.
    pub status_list_size: i64,
    pub login_request_ttl: i64,
    pub pow_difficulty: u32,
    pub login_poll_interval: i32,
    pub max_open_login_requests: u64,
    /// Backchannel approval requests: default (and longest) life, poll
    /// interval, and the caps on pending requests per client and per owner.
    pub ciba_expiry: i64,
    pub ciba_interval: i64,
    pub ciba_max_per_client: u64,
    pub ciba_max_per_owner: u64,
    /// Lifetime of a token for approved authorization details.
    pub approval_token_ttl: i64,
    pub login_rate_per_minute: u32,
    pub pow_free_per_minute: u64,
    /// Sites of kind `dynamic` or `metadata_document` may create login
    /// requests.
    pub pow_login_unvouched: bool,
    /// Open login event streams per node, and per site per node.
    pub login_streams: u32,
    pub login_streams_per_site: u32,
    /// Seconds per bridge CA epoch.
    pub ca_epoch: i64,
    pub bridge_cert_ttl: i64,
    /// Seconds; 0: never reap.
    pub idle_client_ttl: i64,
    pub max_delegation_depth: usize,
    /// Seconds a rotated refresh token may be retried (0: never).
    pub refresh_grace_period: i64,
    pub registration: RegistrationMode,
    pub registration_rate_per_minute: u32,
    pub document_fetches_per_minute: u32,
    pub signup: bool,
    /// `--scopes`: what the default audience and the `--resource`
    /// resources offer (`None`: any scope). What clients may register is
    /// the resource registry's `scopes_supported`, built from this, the
    /// flags and the file.
    pub scopes: Option<Scope>,
    /// `--resource` URIs.
    pub resource_flags: Vec<String>,
    /// `--resources-file`: its path and text.
    pub resources_file: Option<(PathBuf, String)>,
    pub open_resources: bool,
    /// `--federation-file`: its path and text.
    pub federation_file: Option<(PathBuf, String)>,
    pub default_audience: String,
    /// Whether `--default-audience` was given: without it, a server with
    /// exactly one registered resource makes that resource the default.
    pub default_audience_set: bool,
    pub insecure_fetch: bool,
    /// RFC 9449 §8 server nonces on or off.
    pub dpop_nonce: bool,
    /// Seconds a DPoP proof's `iat` may differ from now.
    pub dpop_iat_window: i64,
    /// Lifetime of one DPoP nonce window (a nonce lives one to two windows).
    pub dpop_nonce_period: i64,
    /// Signing threads; 0 signs inline on the async workers.
    pub signing_threads: usize,
    pub signing_alg: SigningAlg,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Origins allowed to call the OAuth endpoints from a browser.
    pub cors_allowed_origins: Vec<String>,
    /// Where /metrics is served: `None` on the main listener.
    pub metrics_listen: Option<SocketAddr>,
    /// SHA-256 of the bearer token /metrics requires, if any.
    pub metrics_token_hash: Option<[u8; 32]>,
    /// How often a node reloads signing keys from the database.
    pub key_reload_interval: Duration,
    /// JWKS `Cache-Control: max-age`.
    pub jwks_max_age: u32,
    /// Lifetime of cached client records on a node (other nodes' changes
    /// become visible within this window).
    pub client_cache_ttl: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("issuer {0:?} is not an absolute URL: {1}")]
    IssuerUrl(String, url::ParseError),
    #[error(
        "issuer {0:?} must be https (http is allowed only on loopback) with no query or fragment"
    )]
    IssuerShape(String),
    #[error("--default-audience {0:?} must be an absolute URI without a fragment")]
    Audience(String),
    #[error("--scopes: {0}")]
    Scopes(String),
    #[error("resources: {0}")]
    Resources(String),
    #[error("federation: {0}")]
    Federation(String),
    #[error("--access-token-ttl must be between 60 and 86400 seconds")]
    Ttl,
    #[error("--trusted-proxies: {0:?} is not an IP address or CIDR block")]
    Proxy(String),
    #[error(
        "--insecure-fetch-for-tests-only turns the SSRF guards off; a release build refuses it"
    )]
    InsecureFetchInRelease,
}

impl Config {
    pub fn from_args(args: &ServeArgs) -> Result<Self, ConfigError> {
        let issuer = args.issuer.trim_end_matches('/').to_string();
        let url = Url::parse(&issuer).map_err(|e| ConfigError::IssuerUrl(issuer.clone(), e))?;
        let loopback = matches!(url.host_str(), Some("127.0.0.1" | "[::1]" | "localhost"));
        let scheme_ok = url.scheme() == "https" || (url.scheme() == "http" && loopback);
        if !scheme_ok || url.query().is_some() || url.fragment().is_some() || url.host().is_none() {
            return Err(ConfigError::IssuerShape(issuer));
        }
        if !(60..=86_400).contains(&args.access_token_ttl) {
            return Err(ConfigError::Ttl);
        }
        // Tests run debug builds; what operators run is a release build,
        // where the switch cannot be turned on, by flag or by environment.
        if args.insecure_fetch && !cfg!(debug_assertions) {
            return Err(ConfigError::InsecureFetchInRelease);
        }
        let default_audience = match &args.default_audience {
            Some(aud) => {
                let parsed = Url::parse(aud).map_err(|_| ConfigError::Audience(aud.clone()))?;
                if parsed.fragment().is_some() {
                    return Err(ConfigError::Audience(aud.clone()));
                }
                aud.clone()
            }
            None => issuer.clone(),
        };
        let scopes = if args.scopes.trim().is_empty() {
            None
        } else {
            Some(Scope::parse(&args.scopes).map_err(|e| ConfigError::Scopes(e.to_string()))?)
        };
        let read = |path: &PathBuf, what: fn(String) -> ConfigError| {
            std::fs::read_to_string(path)
                .map(|text| (path.clone(), text))
                .map_err(|e| what(format!("cannot read {}: {e}", path.display())))
        };
        let resources_file = match &args.resources_file {
            Some(path) => Some(read(path, ConfigError::Resources)?),
            None => None,
        };
        let federation_file = match &args.federation_file {
            Some(path) => Some(read(path, ConfigError::Federation)?),
            None => None,
        };
        Ok(Self {
            issuer,
            listen: args.listen,
            access_token_ttl: i64::from(args.access_token_ttl),
            refresh_token_ttl: i64::from(args.refresh_token_ttl.max(60)),
            passport_ttl: i64::from(
                args.passport_ttl
                    .unwrap_or(args.access_token_ttl)
                    .clamp(60, 86_400),
            ),
            status_list_ttl: i64::from(args.status_list_ttl.clamp(1, 3600)),
            status_list_size: i64::from(args.status_list_size.clamp(1024, 1 << 24) / 1024 * 1024),
            login_request_ttl: i64::from(args.login_request_ttl.clamp(30, 3600)),
            pow_difficulty: args.pow_difficulty.clamp(8, 32),
            login_poll_interval: i32::try_from(args.login_poll_interval.clamp(1, 60)).unwrap_or(5),
            max_open_login_requests: u64::from(args.max_open_login_requests.max(1)),
            ciba_expiry: i64::from(args.ciba_expiry.clamp(30, 3600)),
            ciba_interval: i64::from(args.ciba_interval.clamp(1, 60)),
            ciba_max_per_client: u64::from(args.ciba_max_per_client.max(1)),
            ciba_max_per_owner: u64::from(args.ciba_max_per_owner.max(1)),
            approval_token_ttl: i64::from(args.approval_token_ttl.clamp(30, 300)),
            login_rate_per_minute: args.login_rate_per_minute.max(1),
            pow_free_per_minute: u64::from(args.pow_free_per_minute.max(1)),
            pow_login_unvouched: args.pow_login_unvouched,
            login_streams: args.login_streams.max(1),
            login_streams_per_site: args.login_streams_per_site.max(1),
            ca_epoch: i64::from(args.ca_epoch.max(60)),
            bridge_cert_ttl: i64::from(args.bridge_cert_ttl.clamp(60, 3600)),
            idle_client_ttl: i64::try_from(args.idle_client_ttl).unwrap_or(i64::MAX),
            max_delegation_depth: usize::try_from(args.max_delegation_depth.clamp(1, 10))
                .unwrap_or(3),
            refresh_grace_period: i64::from(args.refresh_grace_period.min(300)),
            registration: args.registration,
            registration_rate_per_minute: args.registration_rate_per_minute.max(1),
            document_fetches_per_minute: args.document_fetch_rate_per_minute.max(1),
            signup: args.signup,
            scopes,
            resource_flags: args.resources.clone(),
            resources_file,
            open_resources: args.open_resources,
            federation_file,
            default_audience,
            default_audience_set: args.default_audience.is_some(),
            insecure_fetch: args.insecure_fetch,
            dpop_nonce: args.dpop_nonce,
            dpop_iat_window: i64::from(args.dpop_iat_window.clamp(1, 3600)),
            dpop_nonce_period: 300,
            signing_threads: args
                .signing_threads
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
                .min(256),
            signing_alg: args.signing_alg,
            trusted_proxies: args
                .trusted_proxies
                .iter()
                .map(|p| p.trim())
                .filter(|p| !p.is_empty())
                .map(|p| {
                    p.parse::<ipnet::IpNet>()
                        .or_else(|_| p.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                        .map_err(|_| ConfigError::Proxy(p.to_string()))
                })
                .collect::<Result<_, _>>()?,
            cors_allowed_origins: args
                .cors_allowed_origins
                .iter()
                .map(|o| o.trim().trim_end_matches('/').to_string())
                .filter(|o| !o.is_empty())
                .collect(),
            metrics_listen: args.metrics_listen,
            metrics_token_hash: args
                .metrics_token
                .as_deref()
                .filter(|t| !t.is_empty())
                .map(|t| crate::crypto::sha256(t.as_bytes())),
            key_reload_interval: Duration::from_secs(u64::from(
                args.key_reload_interval.clamp(1, 3600),
            )),
            jwks_max_age: 300,
            client_cache_ttl: Duration::from_secs(30),
        })
    }

    pub fn endpoint(&self, path: &str) -> String {
        format!("{}{}", self.issuer, path)
    }
}
