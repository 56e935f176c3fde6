//! DPoP `jti`s spent on PostgreSQL, apart from `used_jtis`: a short
//! (128-bit hash) key and no secondary index, so that each proof costs the
//! database one heap row and one btree entry. Purged by a sequential scan
//! (rows live for two minutes).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum DpopJtis {
    Table,
    Key,
    ExpiresAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(DpopJtis::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(DpopJtis::Key)
                            .string()
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(DpopJtis::ExpiresAt).big_integer().not_null())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(DpopJtis::Table).to_owned())
            .await
    }
}
