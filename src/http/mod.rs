//! HTTP endpoints, one file each, plus the extractors they share.

pub mod account;
pub mod approvals;
pub mod authorize;
pub mod backchannel;
pub mod bridge;
pub mod console;
pub mod dpop;
pub mod introspect;
pub mod jwks;
pub mod login_requests;
pub mod metadata;
pub mod openapi;
pub mod operator;
pub mod ops;
pub mod pages;
pub mod passkeys;
pub mod refusals;
pub mod register;
pub mod revoke;
pub mod signed_in;
pub mod ssf;
pub mod status_lists;
pub mod token;

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde::Serialize;

use crate::clients::{self, AuthenticatedClient, Basic, Public};
use crate::error::{Error, OAuthError};
pub use crate::oauth::form::OAuthForm;
use crate::state::{AppState, State};

/// Largest form body the OAuth endpoints read.
pub const MAX_FORM_BYTES: usize = 16 * 1024;

impl<S: Send + Sync> FromRequest<S> for OAuthForm {
    type Rejection = OAuthError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_form = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|m| {
                m.trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            });
        if !is_form {
            return Err(OAuthError::invalid_request(
                "the body must be application/x-www-form-urlencoded",
            ));
        }
        let body = read_body(req, state, MAX_FORM_BYTES).await.map_err(|_| {
            OAuthError::invalid_request(format!("request body larger than {MAX_FORM_BYTES} bytes"))
        })?;
        Self::parse(&body)
    }
}

/// Reads at most `limit` bytes of body; `Err` when there are more.
pub async fn read_body<S: Send + Sync>(
    req: Request,
    _state: &S,
    limit: usize,
) -> Result<Bytes, ()> {
    axum::body::to_bytes(req.into_body(), limit)
        .await
        .map_err(|_| ())
}

/// The client's address, when the server knows it: the peer, or, when the
/// peer is a trusted proxy, the nearest address in `X-Forwarded-For` that
/// is not one (see [`client_address`]).
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub Option<IpAddr>);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        // Also honours axum's MockConnectInfo, which tests install.
        let peer = ConnectInfo::<SocketAddr>::from_request_parts(parts, state)
            .await
            .ok()
            .map(|c| c.0.ip());
        Ok(Self(client_address(
            peer,
            &parts.headers,
            &state.config.trusted_proxies,
        )))
    }
}

/// The peer, unless it is a trusted proxy: then `X-Forwarded-For` is read
/// from the right (the hop the proxy appended) past every trusted proxy; the
/// first address that is not one is the client. A malformed entry stops the
/// walk at the last address known good, so a client cannot pose as another
/// by writing the header itself.
pub fn client_address(
    peer: Option<IpAddr>,
    headers: &HeaderMap,
    trusted: &[ipnet::IpNet],
) -> Option<IpAddr> {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    let mut client = peer?;
    if !is_trusted(&client) {
        return Some(client);
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    for hop in hops.iter().rev() {
        let Ok(ip) = hop.parse::<IpAddr>() else {
            break;
        };
        client = ip;
        if !is_trusted(&ip) {
            break;
        }
    }
    Some(client)
}

impl ClientIp {
    pub fn to_audit(self) -> Option<String> {
        self.0.map(|ip| ip.to_string())
    }
}

/// A JSON response that must not be cached (RFC 6749 §5.1).
pub fn json_no_store<T: Serialize>(status: StatusCode, body: &T) -> Response {
    let body = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    let mut response = (status, body).into_response();
    let headers: &mut HeaderMap = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

/// The token from `Authorization: Bearer …` (RFC 6750 §2.1).
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Authenticates the client of a request to an OAuth endpoint
/// ([`clients::auth`]), with `Authorization: Basic` decoded here.
///
/// RFC 6749 §5.2: a client that authenticated with the `Authorization`
/// header gets `invalid_client` with a `WWW-Authenticate: Basic`
/// challenge; any other gets the same 401 JSON without one (strict
/// JavaScript clients otherwise treat it as a challenge and hide the body).
pub async fn authenticate_client(
    state: &State,
    headers: &HeaderMap,
    form: &OAuthForm,
    public: Public,
    ip: &ClientIp,
) -> Result<AuthenticatedClient, Error> {
    let header_used = headers.contains_key(header::AUTHORIZATION);
    let result = match basic_credentials(headers) {
        Ok(basic) => clients::authenticate(&state.clients, basic, form, public, ip.0).await,
        Err(e) => Err(e.into()),
    };
    result.map_err(|e| match e {
        Error::OAuth(mut e) if header_used && e.error == "invalid_client" => {
            e.challenge = Some(r#"Basic realm="agentauth", charset="UTF-8""#.into());
            Error::OAuth(e)
        }
        other => other,
    })
}

/// RFC 6749 §2.3.1: `Basic base64(urlencode(id) ":" urlencode(secret))`.
/// `Ok(None)` when no Basic credentials were sent.
pub fn basic_credentials(headers: &HeaderMap) -> Result<Option<Basic>, OAuthError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let malformed = || OAuthError::invalid_client("malformed Basic credentials");
    let value = value.to_str().map_err(|_| malformed())?;
    let Some((scheme, encoded)) = value.split_once(' ') else {
        return Err(malformed());
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Ok(None);
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| malformed())?;
    let decoded = String::from_utf8(decoded).map_err(|_| malformed())?;
    let (id, secret) = decoded.split_once(':').ok_or_else(malformed)?;
    let unescape = |s: &str| -> Result<String, OAuthError> {
        let plus_as_space = s.replace('+', " ");
        percent_encoding::percent_decode_str(&plus_as_space)
            .decode_utf8()
            .map(|s| s.into_owned())
            .map_err(|_| malformed())
    };
    let (id, secret) = (unescape(id)?, unescape(secret)?);
    if id.is_empty() {
        return Err(malformed());
    }
    Ok(Some(Basic {
        client_id: id,
        secret,
    }))
}
