//! The owner's console (issue 17): passkeys, the single-use challenges of
//! their ceremonies, and the delegations made by token exchange (so that
//! an owner can see and revoke them).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Passkeys {
    Table,
    Id,
    UserId,
    CredentialId,
    PublicKey,
    Alg,
    SignCount,
    Name,
    BackupEligible,
    CreatedAt,
    LastUsedAt,
}

#[derive(DeriveIden)]
enum WebauthnChallenges {
    Table,
    IdHash,
    Purpose,
    UserId,
    Challenge,
    ExpiresAt,
}

#[derive(DeriveIden)]
enum Delegations {
    Table,
    Jti,
    OwnerId,
    Subject,
    AgentId,
    Actors,
    Resource,
    Scope,
    IssuedAt,
    ExpiresAt,
    RevokedAt,
}

/// The audit log, which the console reads per agent and the operator
/// filters by client and actor.
#[derive(DeriveIden)]
enum AuditLog {
    Table,
    Id,
    ClientId,
    Subject,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Passkeys::Table)
                    .col(
                        ColumnDef::new(Passkeys::Id)
                            .string_len(64)
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(Passkeys::UserId).string_len(64).not_null())
                    .col(
                        ColumnDef::new(Passkeys::CredentialId)
                            .binary()
                            .not_null()
                            .unique_key(),
                    )
                    .col(ColumnDef::new(Passkeys::PublicKey).binary().not_null())
                    .col(ColumnDef::new(Passkeys::Alg).big_integer().not_null())
                    .col(ColumnDef::new(Passkeys::SignCount).big_integer().not_null())
                    .col(ColumnDef::new(Passkeys::Name).string_len(64).not_null())
                    .col(
                        ColumnDef::new(Passkeys::BackupEligible)
                            .boolean()
                            .not_null(),
                    )
                    .col(ColumnDef::new(Passkeys::CreatedAt).big_integer().not_null())
                    .col(ColumnDef::new(Passkeys::LastUsedAt).big_integer().null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("passkeys_user")
                    .table(Passkeys::Table)
                    .col(Passkeys::UserId)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(WebauthnChallenges::Table)
                    .col(
                        ColumnDef::new(WebauthnChallenges::IdHash)
                            .binary()
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(WebauthnChallenges::Purpose)
                            .string_len(16)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(WebauthnChallenges::UserId)
                            .string_len(64)
                            .null(),
                    )
                    .col(
                        ColumnDef::new(WebauthnChallenges::Challenge)
                            .binary()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(WebauthnChallenges::ExpiresAt)
                            .big_integer()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Delegations::Table)
                    .col(
                        ColumnDef::new(Delegations::Jti)
                            .string_len(64)
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(Delegations::OwnerId)
                            .string_len(64)
                            .not_null(),
                    )
                    .col(ColumnDef::new(Delegations::Subject).string().not_null())
                    .col(
                        ColumnDef::new(Delegations::AgentId)
                            .string_len(64)
                            .not_null(),
                    )
                    .col(ColumnDef::new(Delegations::Actors).text().not_null())
                    .col(ColumnDef::new(Delegations::Resource).text().not_null())
                    .col(ColumnDef::new(Delegations::Scope).text().not_null())
                    .col(
                        ColumnDef::new(Delegations::IssuedAt)
                            .big_integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(Delegations::ExpiresAt)
                            .big_integer()
                            .not_null(),
                    )
                    .col(ColumnDef::new(Delegations::RevokedAt).big_integer().null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("delegations_owner")
                    .table(Delegations::Table)
                    .col(Delegations::OwnerId)
                    .col(Delegations::ExpiresAt)
                    .to_owned(),
            )
            .await?;
        for (name, col) in [
            ("audit_log_client", AuditLog::ClientId),
            ("audit_log_subject", AuditLog::Subject),
        ] {
            manager
                .create_index(
                    Index::create()
                        .name(name)
                        .table(AuditLog::Table)
                        .col(col)
                        .col(AuditLog::Id)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for name in ["audit_log_client", "audit_log_subject"] {
            manager
                .drop_index(Index::drop().name(name).table(AuditLog::Table).to_owned())
                .await?;
        }
        for table in [
            Delegations::Table.into_iden(),
            WebauthnChallenges::Table.into_iden(),
            Passkeys::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}
