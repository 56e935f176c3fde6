//! Refresh-token retries (issue 12): a rotated token keeps, sealed under a
//! KEK-derived key and only for the grace window, the response its rotation
//! produced, so that a client retrying within the window gets the same
//! child pair instead of having its family revoked.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum RefreshTokens {
    Table,
    RetrySealed,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(RefreshTokens::Table)
                    .add_column(ColumnDef::new(RefreshTokens::RetrySealed).binary().null())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(RefreshTokens::Table)
                    .drop_column(RefreshTokens::RetrySealed)
                    .to_owned(),
            )
            .await
    }
}
