//! The epoch CA: one Ed25519 key and self-signed CA certificate per
//! epoch, in the database (the key sealed under the KEK, like the token
//! signing keys), so that every node issues under the same CA.
//!
//! - The newest started epoch that is not dropped issues.
//! - The trust bundle (`/.well-known/ca-bundle.pem`) is that epoch's CA and
//!   the one before it, unless dropped: a certificate issued just before a
//!   rotation keeps verifying for its few minutes.
//! - An epoch older than `--ca-epoch` is followed by the next one, started
//!   by whichever node notices first (the epoch number is the primary key:
//!   one node wins, the others load its CA).
//! - `agentauth ca rotate` starts the next epoch at once; with
//!   `--drop-previous` every older CA leaves the bundle in the same
//!   transaction. Nodes see either within [`REFRESH`].

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ED25519, SerialNumber,
};
use serde_json::json;

use super::BridgeError;
use crate::crypto::{Kek, random_bytes, sha256};
use crate::store::bridge::{self as store, EpochRow};
use crate::store::{Db, StoreError};

/// How stale a node's view of the epochs may be.
pub const REFRESH: Duration = Duration::from_secs(5);

/// Longest bridge-certificate lifetime (`--bridge-cert-ttl` at most).
pub const MAX_CERT_TTL: i64 = 3600;

/// Clock skew allowed for in a CA's validity.
const SKEW: i64 = 300;

/// One epoch's CA, ready to sign.
pub struct EpochCa {
    pub epoch: i64,
    pub started_at: i64,
    pub not_after: i64,
    pub certificate_der: Vec<u8>,
    pub certificate_pem: String,
    pub issuer: Issuer<'static, KeyPair>,
}

impl EpochCa {
    /// Opens a stored epoch (its key under the CA KEK).
    pub fn open_row(kek: &Kek, row: &EpochRow) -> Result<Self, BridgeError> {
        let der = kek
            .open(&aad(row.epoch), &row.private_key_sealed)
            .map_err(|e| {
                BridgeError::Internal(format!("CA of epoch {} cannot be opened: {e}", row.epoch))
            })?;
        let key = KeyPair::from_pkcs8_der_and_sign_algo(&der.as_slice().into(), &PKCS_ED25519)
            .map_err(|e| BridgeError::Internal(e.to_string()))?;
        let cert = rustls_pki_types::CertificateDer::from(row.certificate_der.as_slice());
        let issuer = Issuer::from_ca_cert_der(&cert, key)
            .map_err(|e| BridgeError::Internal(e.to_string()))?;
        Ok(Self {
            epoch: row.epoch,
            started_at: row.started_at,
            not_after: row.not_after,
            certificate_pem: pem(&row.certificate_der),
            certificate_der: row.certificate_der.clone(),
            issuer,
        })
    }

    /// RFC 8705 §3.1 style thumbprint of the CA certificate.
    pub fn fingerprint(&self) -> String {
        crate::crypto::b64url(&sha256(&self.certificate_der))
    }
}

/// The key that seals CA keys: derived from the KEK (a node with the KEK
/// opens them; nothing else does).
pub fn ca_kek(kek: &Kek) -> Result<Kek, crate::crypto::KekError> {
    Kek::from_bytes(&kek.derive(b"agentauth bridge ca v1"))
}

/// The issuer's host, the CA certificates' organization.
pub fn issuer_host(issuer: &str) -> String {
    url::Url::parse(issuer)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_else(|| issuer.to_string())
}

fn aad(epoch: i64) -> Vec<u8> {
    format!("agentauth ca epoch {epoch}").into_bytes()
}

/// PEM of one DER certificate (RFC 7468, LF line endings).
pub fn pem(der: &[u8]) -> String {
    pem::encode_config(
        &pem::Pem::new("CERTIFICATE", der),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

fn datetime(unix: i64) -> Result<time::OffsetDateTime, BridgeError> {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .map_err(|_| BridgeError::Internal("time out of range".into()))
}

/// A random positive serial number of 16 bytes (RFC 5280 §4.1.2.2: at most
/// 20 octets, positive).
pub fn serial() -> Result<(SerialNumber, String), BridgeError> {
    let mut bytes =
        random_bytes::<16>().map_err(|_| BridgeError::Internal("no randomness".into()))?;
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    let hex = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Ok((SerialNumber::from_slice(&bytes), hex))
}

/// Generates epoch `epoch`'s CA, starting at `now`.
pub fn generate(
    kek: &Kek,
    issuer_host: &str,
    epoch: i64,
    now: i64,
    epoch_len: i64,
) -> Result<EpochRow, BridgeError> {
    let internal = |e: rcgen::Error| BridgeError::Internal(e.to_string());
    let key = KeyPair::generate_for(&PKCS_ED25519).map_err(internal)?;
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, issuer_host);
    name.push(
        DnType::CommonName,
        format!("agentauth bridge CA, epoch {epoch}"),
    );
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    // Issues while current, verifies while previous, and outlives the
    // last certificate it can have issued.
    let not_after = now + 2 * epoch_len + MAX_CERT_TTL + SKEW;
    params.not_before = datetime(now - SKEW)?;
    params.not_after = datetime(not_after)?;
    params.serial_number = Some(serial()?.0);
    let cert = params.self_signed(&key).map_err(internal)?;
    let sealed = kek
        .seal(&aad(epoch), key.serialized_der())
        .map_err(|_| BridgeError::Internal("no randomness".into()))?;
    Ok(EpochRow {
        epoch,
        private_key_sealed: sealed,
        certificate_der: cert.der().to_vec(),
        started_at: now,
        not_after,
        dropped_at: None,
    })
}

/// One node's view of the epochs.
pub struct CaSet {
    /// The issuing CA, then the previous one (when still in the bundle).
    pub live: Vec<Arc<EpochCa>>,
    /// The trust bundle, PEM.
    pub bundle_pem: String,
    loaded: Instant,
}

impl CaSet {
    /// The CA that issues now.
    pub fn issuing(&self) -> Option<&Arc<EpochCa>> {
        self.live.first()
    }

    fn build(kek: &Kek, rows: &[EpochRow], now: i64, old: Option<&CaSet>) -> Self {
        // Newest started epoch not dropped, then its predecessor.
        let mut started: Vec<&EpochRow> = rows
            .iter()
            .filter(|r| r.dropped_at.is_none() && r.started_at <= now && r.not_after > now)
            .collect();
        started.sort_by_key(|r| std::cmp::Reverse(r.epoch));
        let mut live = Vec::new();
        for row in started.into_iter().take(2) {
            if let Some(first) = live.first().map(|c: &Arc<EpochCa>| c.epoch)
                && row.epoch != first - 1
            {
                break;
            }
            let reused = old.and_then(|o| o.live.iter().find(|c| c.epoch == row.epoch).cloned());
            match reused.map_or_else(|| EpochCa::open_row(kek, row).map(Arc::new), Ok) {
                Ok(ca) => live.push(ca),
                Err(e) => tracing::error!(error = %e, "bridge CA skipped"),
            }
        }
        let bundle_pem = live.iter().map(|c| c.certificate_pem.as_str()).collect();
        Self {
            live,
            bundle_pem,
            loaded: Instant::now(),
        }
    }
}

/// The node's CA ring: the epochs, refreshed from the database at most
/// every [`REFRESH`] when asked for, with a new epoch started when the
/// current one is over.
pub struct CaRing {
    kek: Kek,
    issuer_host: String,
    epoch_len: i64,
    set: RwLock<Arc<CaSet>>,
    refreshing: tokio::sync::Mutex<()>,
}

impl CaRing {
    /// Loads the epochs, starting the first (or the next, when the last
    /// is over) if needed.
    pub async fn load_or_init(
        db: &Db,
        kek: Kek,
        issuer_host: String,
        epoch_len: i64,
        now: i64,
    ) -> Result<Self, StoreError> {
        let ring = Self {
            kek,
            issuer_host,
            epoch_len,
            set: RwLock::new(Arc::new(CaSet {
                live: Vec::new(),
                bundle_pem: String::new(),
                loaded: Instant::now(),
            })),
            refreshing: tokio::sync::Mutex::new(()),
        };
        ring.reload(db, now).await?;
        Ok(ring)
    }

    pub fn current(&self) -> Arc<CaSet> {
        match self.set.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The current set, refreshed first when it is older than [`REFRESH`]
    /// or its epoch is over. A database failure keeps the set this node
    /// has (certificates still issue; the bundle is still served); a node
    /// with no CA it can open re-reads at most every [`REFRESH`] too.
    pub async fn fresh(&self, db: &Db, now: i64) -> Arc<CaSet> {
        let set = self.current();
        let over = set
            .issuing()
            .is_some_and(|c| c.started_at + self.epoch_len <= now);
        if set.loaded.elapsed() < REFRESH && !over {
            return set;
        }
        // One refresh at a time; the others use what there is.
        let Ok(_guard) = self.refreshing.try_lock() else {
            return set;
        };
        if self.current().loaded > set.loaded {
            return self.current();
        }
        if let Err(e) = self.reload(db, now).await {
            tracing::warn!(error = %e, "bridge CA reload failed; keeping the current CAs");
        }
        self.current()
    }

    /// Re-reads the epochs; starts the next one when the newest is over.
    pub async fn reload(&self, db: &Db, now: i64) -> Result<(), StoreError> {
        let mut rows = store::epochs(db).await?;
        let newest = rows
            .iter()
            .filter(|r| r.started_at <= now)
            .max_by_key(|r| r.epoch);
        let due =
            newest.is_none_or(|r| r.started_at + self.epoch_len <= now || r.dropped_at.is_some());
        if due {
            let next = rows.iter().map(|r| r.epoch).max().unwrap_or(0) + 1;
            let maker = EpochMaker {
                kek: &self.kek,
                issuer_host: &self.issuer_host,
                epoch_len: self.epoch_len,
            };
            match maker.start(db, next, false, "schedule", now).await {
                Ok(true) => tracing::info!(epoch = next, "started a bridge CA epoch"),
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "starting a bridge CA epoch failed"),
            }
            rows = store::epochs(db).await?;
        }
        let old = self.current();
        let set = CaSet::build(&self.kek, &rows, now, Some(&old));
        match self.set.write() {
            Ok(mut guard) => *guard = Arc::new(set),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(set),
        }
        Ok(())
    }
}

/// What starting an epoch takes: the CA KEK, the issuer's host (the CA's
/// organization) and the epoch length.
struct EpochMaker<'a> {
    kek: &'a Kek,
    issuer_host: &'a str,
    epoch_len: i64,
}

impl EpochMaker<'_> {
    /// Generates epoch `epoch`'s CA and stores it with its audit row
    /// (`ca.rotated`, by `by`); `Ok(false)` when another node started that
    /// epoch first. With `drop_previous`, every older CA leaves the bundle.
    async fn start(
        &self,
        db: &Db,
        epoch: i64,
        drop_previous: bool,
        by: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        let row = generate(self.kek, self.issuer_host, epoch, now, self.epoch_len)
            .map_err(|e| StoreError::unavailable(e.to_string()))?;
        let audit = crate::store::audit::AuditEvent {
            at: now,
            event: "ca.rotated",
            client_id: None,
            subject: Some(by.to_string()),
            ip: None,
            detail: json!({ "epoch": epoch, "drop_previous": drop_previous, "by": by }),
        };
        store::start_epoch(db, row, drop_previous, now, audit).await
    }
}

/// `agentauth ca rotate`: starts the next epoch now; with `drop_previous`
/// every older CA leaves the bundle. Returns the new epoch number.
pub async fn rotate(
    db: &Db,
    kek: &Kek,
    issuer_host: &str,
    epoch_len: i64,
    drop_previous: bool,
    now: i64,
) -> Result<i64, anyhow::Error> {
    let maker = EpochMaker {
        kek,
        issuer_host,
        epoch_len,
    };
    for _ in 0..3 {
        let rows = store::epochs(db).await?;
        // Refuse to start an epoch under a KEK the servers do not hold.
        if let Some(last) = rows.last() {
            kek.open(&aad(last.epoch), &last.private_key_sealed)
                .map_err(|_| {
                    anyhow::anyhow!(
                        "this KEK cannot open the current CA key; use the servers' AGENTAUTH_KEK"
                    )
                })?;
        }
        let next = rows.last().map_or(0, |r| r.epoch) + 1;
        if maker.start(db, next, drop_previous, "cli", now).await? {
            return Ok(next);
        }
    }
    anyhow::bail!("another node kept starting epochs; try again")
}

/// `/.well-known/agentauth-authority.json`: what a verifier needs to know.
pub fn authority_document(
    issuer: &str,
    set: &CaSet,
    epoch_len: i64,
    cert_ttl: i64,
) -> serde_json::Value {
    let epochs: Vec<_> = set
        .live
        .iter()
        .enumerate()
        .map(|(i, ca)| {
            json!({
                "epoch": ca.epoch,
                "status": if i == 0 { "current" } else { "previous" },
                "started_at": ca.started_at,
                "rotates_at": if i == 0 { Some(ca.started_at + epoch_len) } else { None },
                "not_after": ca.not_after,
                "certificate_sha256": ca.fingerprint(),
            })
        })
        .collect();
    json!({
        "issuer": issuer,
        "ca_bundle_uri": format!("{issuer}/.well-known/ca-bundle.pem"),
        "token_endpoint": format!("{issuer}/token"),
        "nonce_endpoint": format!("{issuer}/bridge-certs/nonce"),
        "jwks_uri": format!("{issuer}/jwks.json"),
        "grant_type": crate::oauth::grant_type::BRIDGE_CERT,
        "issued_token_type": crate::oauth::grant_type::CERT_CHAIN_TOKEN_TYPE,
        "ca_algorithm": "Ed25519",
        "certificate_key_algorithms": ["Ed25519"],
        "proof_methods": ["csr", "dpop"],
        "certificate_lifetime": cert_ttl,
        "max_certificate_lifetime": MAX_CERT_TTL,
        "epoch_length": epoch_len,
        "agent_uri_prefix": format!("{issuer}/agents/"),
        "epochs": epochs,
        "revocation": "none: certificates live minutes; a rotation with --drop-previous removes a CA from the bundle",
    })
}
