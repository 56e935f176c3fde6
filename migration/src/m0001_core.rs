use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Clients {
    Table,
    ClientId,
    ClientSecretHash,
    RegistrationAccessTokenHash,
    Metadata,
    ClientIdIssuedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum SigningKeys {
    Table,
    Kid,
    Alg,
    PrivateKeySealed,
    PublicJwk,
    CreatedAt,
    ActivatesAt,
    RetireAfter,
}

#[derive(DeriveIden)]
enum RevokedTokens {
    Table,
    Jti,
    ClientId,
    RevokedAt,
    ExpiresAt,
}

#[derive(DeriveIden)]
enum UsedJtis {
    Table,
    Key,
    ExpiresAt,
}

#[derive(DeriveIden)]
enum InitialAccessTokens {
    Table,
    TokenHash,
    CreatedAt,
    ExpiresAt,
    UsesRemaining,
}

#[derive(DeriveIden)]
enum AuditLog {
    Table,
    Id,
    At,
    Event,
    ClientId,
    Subject,
    Ip,
    Detail,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Clients::Table)
                    .col(ColumnDef::new(Clients::ClientId).string().not_null().primary_key())
                    .col(ColumnDef::new(Clients::ClientSecretHash).binary())
                    .col(ColumnDef::new(Clients::RegistrationAccessTokenHash).binary())
                    .col(ColumnDef::new(Clients::Metadata).json_binary().not_null())
                    .col(ColumnDef::new(Clients::ClientIdIssuedAt).big_integer().not_null())
                    .col(ColumnDef::new(Clients::UpdatedAt).big_integer().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(SigningKeys::Table)
                    .col(ColumnDef::new(SigningKeys::Kid).string().not_null().primary_key())
                    .col(ColumnDef::new(SigningKeys::Alg).string().not_null())
                    .col(ColumnDef::new(SigningKeys::PrivateKeySealed).binary().not_null())
                    .col(ColumnDef::new(SigningKeys::PublicJwk).json_binary().not_null())
                    .col(ColumnDef::new(SigningKeys::CreatedAt).big_integer().not_null())
                    .col(ColumnDef::new(SigningKeys::ActivatesAt).big_integer().not_null())
                    .col(ColumnDef::new(SigningKeys::RetireAfter).big_integer())
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(RevokedTokens::Table)
                    .col(ColumnDef::new(RevokedTokens::Jti).string().not_null().primary_key())
                    .col(ColumnDef::new(RevokedTokens::ClientId).string().not_null())
                    .col(ColumnDef::new(RevokedTokens::RevokedAt).big_integer().not_null())
                    .col(ColumnDef::new(RevokedTokens::ExpiresAt).big_integer().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_revoked_tokens_expires_at")
                    .table(RevokedTokens::Table)
                    .col(RevokedTokens::ExpiresAt)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(UsedJtis::Table)
                    .col(ColumnDef::new(UsedJtis::Key).string().not_null().primary_key())
                    .col(ColumnDef::new(UsedJtis::ExpiresAt).big_integer().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_used_jtis_expires_at")
                    .table(UsedJtis::Table)
                    .col(UsedJtis::ExpiresAt)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(InitialAccessTokens::Table)
                    .col(
                        ColumnDef::new(InitialAccessTokens::TokenHash)
                            .binary()
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(InitialAccessTokens::CreatedAt).big_integer().not_null())
                    .col(ColumnDef::new(InitialAccessTokens::ExpiresAt).big_integer())
                    .col(ColumnDef::new(InitialAccessTokens::UsesRemaining).integer())
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(AuditLog::Table)
                    .col(
                        ColumnDef::new(AuditLog::Id)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(AuditLog::At).big_integer().not_null())
                    .col(ColumnDef::new(AuditLog::Event).string().not_null())
                    .col(ColumnDef::new(AuditLog::ClientId).string())
                    .col(ColumnDef::new(AuditLog::Subject).string())
                    .col(ColumnDef::new(AuditLog::Ip).string())
                    .col(ColumnDef::new(AuditLog::Detail).json_binary().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_audit_log_at")
                    .table(AuditLog::Table)
                    .col(AuditLog::At)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            AuditLog::Table.into_iden(),
            InitialAccessTokens::Table.into_iden(),
            UsedJtis::Table.into_iden(),
            RevokedTokens::Table.into_iden(),
            SigningKeys::Table.into_iden(),
            Clients::Table.into_iden(),
        ] {
            manager.drop_table(Table::drop().table(table).to_owned()).await?;
        }
        Ok(())
    }
}
