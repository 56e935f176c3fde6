use sea_orm::entity::prelude::*;

/// A Token Status List: `size` indices, of which `next_idx` are handed
/// out (a block at a time); retired once `retire_after` passes.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "status_lists")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub size: i64,
    pub next_idx: i64,
    pub created_at: i64,
    pub retire_after: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
