//! Agents (issue 13): identities of their own, owned by a user. An agent
//! is also a client (same id, kind `agent`, `private_key_jwt` with its
//! keys), so that it authenticates like any client; this table holds what
//! only agents have: the owner, the status the kill switch flips, and
//! what it may ask for. Initial access tokens may name an owner: a
//! registration with such a token creates an agent for that owner.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Agents {
    Table,
    Id,
    Name,
    OwnerId,
    Status,
    Scope,
    Resources,
    CreatedAt,
    UpdatedAt,
    DisabledAt,
}

#[derive(DeriveIden)]
enum InitialAccessTokens {
    Table,
    OwnerId,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Agents::Table)
                    .col(
                        ColumnDef::new(Agents::Id)
                            .string_len(64)
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(Agents::Name).string_len(200).not_null())
                    .col(ColumnDef::new(Agents::OwnerId).string_len(64).not_null())
                    .col(ColumnDef::new(Agents::Status).string_len(16).not_null())
                    .col(ColumnDef::new(Agents::Scope).text().not_null())
                    .col(ColumnDef::new(Agents::Resources).json().not_null())
                    .col(ColumnDef::new(Agents::CreatedAt).big_integer().not_null())
                    .col(ColumnDef::new(Agents::UpdatedAt).big_integer().not_null())
                    .col(ColumnDef::new(Agents::DisabledAt).big_integer().null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("agents_owner")
                    .table(Agents::Table)
                    .col(Agents::OwnerId)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(InitialAccessTokens::Table)
                    .add_column(
                        ColumnDef::new(InitialAccessTokens::OwnerId)
                            .string_len(64)
                            .null(),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(InitialAccessTokens::Table)
                    .drop_column(InitialAccessTokens::OwnerId)
                    .to_owned(),
            )
            .await?;
        manager
            .drop_table(Table::drop().table(Agents::Table).to_owned())
            .await
    }
}
