use sea_orm::entity::prelude::*;

/// One step of a client's authorization attempt, for the connection
/// doctor. Never holds a secret, code or token.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "client_traces")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub client_id: String,
    /// The `/authorize` request it belongs to (short, shown on error pages).
    pub attempt: Option<String>,
    pub at: i64,
    pub step: String,
    /// `ok` or `refused`.
    pub outcome: String,
    pub reason: Option<String>,
    pub fix: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
