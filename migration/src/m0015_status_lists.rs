//! Token Status Lists (draft-ietf-oauth-status-list, issue 31).
//!
//! `status_lists`: one row per list, whose `next_idx` nodes advance by a
//! block at a time (one statement per block, not per token); a list is
//! retired (deleted) once `retire_after` passes, by then every token
//! indexed in it has expired.
//!
//! `status_tokens`: where a token's status is, for the tokens something
//! other than the token itself can revoke (a family, a code, a delegation,
//! a kill); `status_agents`: which agents each such token names, so that a
//! kill finds its tokens by index.
//!
//! `revoked_tokens` gains the list and index of each revoked token: the
//! bits every node serves are read from it.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum StatusLists {
    Table,
    Id,
    Size,
    NextIdx,
    CreatedAt,
    RetireAfter,
}

#[derive(DeriveIden)]
enum StatusTokens {
    Table,
    Jti,
    ListId,
    Idx,
    Iat,
    ExpiresAt,
}

#[derive(DeriveIden)]
enum StatusAgents {
    Table,
    AgentId,
    Jti,
    ListId,
    Idx,
    Iat,
    ExpiresAt,
}

#[derive(DeriveIden)]
enum RevokedTokens {
    Table,
    StatusList,
    StatusIdx,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(StatusLists::Table)
                    .col(
                        ColumnDef::new(StatusLists::Id)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(StatusLists::Size).big_integer().not_null())
                    .col(
                        ColumnDef::new(StatusLists::NextIdx)
                            .big_integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(StatusLists::CreatedAt)
                            .big_integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(StatusLists::RetireAfter)
                            .big_integer()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(StatusTokens::Table)
                    .col(
                        ColumnDef::new(StatusTokens::Jti)
                            .string()
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(StatusTokens::ListId)
                            .big_integer()
                            .not_null(),
                    )
                    .col(ColumnDef::new(StatusTokens::Idx).big_integer().not_null())
                    .col(ColumnDef::new(StatusTokens::Iat).big_integer().not_null())
                    .col(
                        ColumnDef::new(StatusTokens::ExpiresAt)
                            .big_integer()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(StatusAgents::Table)
                    .col(ColumnDef::new(StatusAgents::AgentId).string().not_null())
                    .col(ColumnDef::new(StatusAgents::Jti).string().not_null())
                    .col(
                        ColumnDef::new(StatusAgents::ListId)
                            .big_integer()
                            .not_null(),
                    )
                    .col(ColumnDef::new(StatusAgents::Idx).big_integer().not_null())
                    .col(ColumnDef::new(StatusAgents::Iat).big_integer().not_null())
                    .col(
                        ColumnDef::new(StatusAgents::ExpiresAt)
                            .big_integer()
                            .not_null(),
                    )
                    .primary_key(
                        Index::create()
                            .col(StatusAgents::AgentId)
                            .col(StatusAgents::Jti),
                    )
                    .to_owned(),
            )
            .await?;
        for (name, table, col) in [
            (
                "status_tokens_expires",
                StatusTokens::Table.into_iden(),
                StatusTokens::ExpiresAt.into_iden(),
            ),
            (
                "status_agents_expires",
                StatusAgents::Table.into_iden(),
                StatusAgents::ExpiresAt.into_iden(),
            ),
        ] {
            manager
                .create_index(Index::create().name(name).table(table).col(col).to_owned())
                .await?;
        }
        for col in [RevokedTokens::StatusList, RevokedTokens::StatusIdx] {
            manager
                .alter_table(
                    Table::alter()
                        .table(RevokedTokens::Table)
                        .add_column(ColumnDef::new(col).big_integer().null())
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for col in [RevokedTokens::StatusList, RevokedTokens::StatusIdx] {
            manager
                .alter_table(
                    Table::alter()
                        .table(RevokedTokens::Table)
                        .drop_column(col)
                        .to_owned(),
                )
                .await?;
        }
        for table in [
            StatusAgents::Table.into_iden(),
            StatusTokens::Table.into_iden(),
            StatusLists::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}
