use sea_orm::entity::prelude::*;

/// A bridge certificate issued to an agent (never the certificate itself:
/// what binds tokens to it). Kept until it expires.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "bridge_certs")]
pub struct Model {
    /// Hex of the certificate's serial number.
    #[sea_orm(primary_key, auto_increment = false)]
    pub serial: String,
    pub agent_id: String,
    /// RFC 7638 thumbprint of the certified key.
    pub jkt: String,
    /// RFC 8705 §3.1 `x5t#S256`: SHA-256 of the certificate's DER.
    pub x5t_s256: String,
    pub epoch: i64,
    pub issued_at: i64,
    pub not_after: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
