//! Proof-of-work login (issue 15): a site asks an agent to log in; the
//! agent fetches a single-use challenge, solves it and approves (or
//! denies); the site learns the outcome by SSE or by polling `/token`,
//! and the agent's passport is delivered to it exactly once.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum LoginRequests {
    Table,
    Id,
    SiteClientId,
    AgentId,
    Scope,
    Status,
    Challenge,
    ChallengeAgent,
    Difficulty,
    CreatedAt,
    ExpiresAt,
    PollInterval,
    LastPollAt,
    ResolvedAt,
    ResolvedAgent,
    AgentJkt,
    DeliveredAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(LoginRequests::Table)
                    .col(
                        ColumnDef::new(LoginRequests::Id)
                            .string_len(64)
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(LoginRequests::SiteClientId)
                            .string_len(512)
                            .not_null(),
                    )
                    .col(ColumnDef::new(LoginRequests::AgentId).string_len(64).null())
                    .col(ColumnDef::new(LoginRequests::Scope).text().not_null())
                    .col(
                        ColumnDef::new(LoginRequests::Status)
                            .string_len(16)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(LoginRequests::Challenge)
                            .string_len(64)
                            .null(),
                    )
                    .col(
                        ColumnDef::new(LoginRequests::ChallengeAgent)
                            .string_len(64)
                            .null(),
                    )
                    .col(ColumnDef::new(LoginRequests::Difficulty).integer().null())
                    .col(
                        ColumnDef::new(LoginRequests::CreatedAt)
                            .big_integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(LoginRequests::ExpiresAt)
                            .big_integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(LoginRequests::PollInterval)
                            .integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(LoginRequests::LastPollAt)
                            .big_integer()
                            .null(),
                    )
                    .col(
                        ColumnDef::new(LoginRequests::ResolvedAt)
                            .big_integer()
                            .null(),
                    )
                    .col(
                        ColumnDef::new(LoginRequests::ResolvedAgent)
                            .string_len(64)
                            .null(),
                    )
                    .col(
                        ColumnDef::new(LoginRequests::AgentJkt)
                            .string_len(64)
                            .null(),
                    )
                    .col(
                        ColumnDef::new(LoginRequests::DeliveredAt)
                            .big_integer()
                            .null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("login_requests_site")
                    .table(LoginRequests::Table)
                    .col(LoginRequests::SiteClientId)
                    .col(LoginRequests::Status)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("login_requests_expiry")
                    .table(LoginRequests::Table)
                    .col(LoginRequests::ExpiresAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(LoginRequests::Table).to_owned())
            .await
    }
}
