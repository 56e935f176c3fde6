use sea_orm::entity::prelude::*;

/// The bridge-certificate CA of one epoch: an Ed25519 key (PKCS#8 DER
/// sealed under the key-encryption key) and its self-signed certificate.
/// The newest started epoch that is not dropped issues; it and the one
/// before it are the trust bundle.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "ca_epochs")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub epoch: i64,
    pub private_key_sealed: Vec<u8>,
    pub certificate_der: Vec<u8>,
    pub started_at: i64,
    /// The CA certificate's notAfter.
    pub not_after: i64,
    /// Set by `agentauth ca rotate --drop-previous`: out of the bundle.
    pub dropped_at: Option<i64>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
