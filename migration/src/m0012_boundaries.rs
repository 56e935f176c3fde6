//! Trust boundaries (issue 28): the kill switch's cut-off (what an agent
//! got before it was disabled or lost a key stays dead when it is enabled
//! again; SECURITY.md, "Kill, then re-enable"), and each delegation's
//! subject token (revoking it revokes what was derived; SECURITY.md,
//! "Delegations").

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Agents {
    Table,
    TokensValidAfter,
}

#[derive(DeriveIden)]
enum Delegations {
    Table,
    ParentJti,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Agents::Table)
                    .add_column(
                        ColumnDef::new(Agents::TokensValidAfter)
                            .big_integer()
                            .not_null()
                            .default(0),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Delegations::Table)
                    .add_column(ColumnDef::new(Delegations::ParentJti).string().null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_delegations_parent_jti")
                    .table(Delegations::Table)
                    .col(Delegations::ParentJti)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name("idx_delegations_parent_jti")
                    .table(Delegations::Table)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Delegations::Table)
                    .drop_column(Delegations::ParentJti)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Agents::Table)
                    .drop_column(Agents::TokensValidAfter)
                    .to_owned(),
            )
            .await
    }
}
