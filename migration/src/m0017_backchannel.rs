//! Backchannel approval requests (OpenID CIBA Core 1.0, issue 32): a
//! client asks an owner to approve an action; the owner answers in the
//! console; the client polls the token endpoint or is pinged.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum BackchannelRequests {
    Table,
    Id,
    ReqHash,
    ClientId,
    AgentId,
    UserId,
    Scope,
    Resources,
    AuthorizationDetails,
    BindingMessage,
    Status,
    CreatedAt,
    ExpiresAt,
    PollInterval,
    LastPollAt,
    ResolvedAt,
    DeliveredAt,
    NotifyEndpoint,
    NotifySealed,
    NotifiedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use BackchannelRequests as B;
        let big = |c: B| ColumnDef::new(c).big_integer().not_null().to_owned();
        let big_null = |c: B| ColumnDef::new(c).big_integer().null().to_owned();
        manager
            .create_table(
                Table::create()
                    .table(B::Table)
                    .col(
                        ColumnDef::new(B::Id)
                            .string_len(64)
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(B::ReqHash).binary().not_null().unique_key())
                    .col(ColumnDef::new(B::ClientId).string_len(512).not_null())
                    .col(ColumnDef::new(B::AgentId).string_len(64).null())
                    .col(ColumnDef::new(B::UserId).string_len(64).null())
                    .col(ColumnDef::new(B::Scope).text().not_null())
                    .col(ColumnDef::new(B::Resources).text().not_null())
                    .col(ColumnDef::new(B::AuthorizationDetails).text().null())
                    .col(ColumnDef::new(B::BindingMessage).string_len(256).null())
                    .col(ColumnDef::new(B::Status).string_len(16).not_null())
                    .col(big(B::CreatedAt))
                    .col(big(B::ExpiresAt))
                    .col(ColumnDef::new(B::PollInterval).integer().not_null())
                    .col(big_null(B::LastPollAt))
                    .col(big_null(B::ResolvedAt))
                    .col(big_null(B::DeliveredAt))
                    .col(ColumnDef::new(B::NotifyEndpoint).text().null())
                    .col(ColumnDef::new(B::NotifySealed).binary().null())
                    .col(big_null(B::NotifiedAt))
                    .to_owned(),
            )
            .await?;
        for (name, cols) in [
            ("backchannel_requests_client", vec![B::ClientId, B::Status]),
            ("backchannel_requests_user", vec![B::UserId, B::Status]),
            ("backchannel_requests_expiry", vec![B::ExpiresAt]),
        ] {
            let mut index = Index::create();
            index.name(name).table(B::Table);
            for c in cols {
                index.col(c);
            }
            manager.create_index(index.to_owned()).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(BackchannelRequests::Table).to_owned())
            .await
    }
}
