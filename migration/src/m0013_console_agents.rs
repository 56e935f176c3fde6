//! Agents their owners made in the console (issue 28 item 2) are of kind
//! `owner_agent`, which is not vouched for: they get tokens with no user
//! (`client_credentials`) only from resources whose operator lists that
//! kind (SECURITY.md, "Agents made by owners").
//!
//! Existing rows: the console wrote `agent.created` with the owner as the
//! actor (`subject`); the CLI wrote `cli`, and `/register` the caller's
//! address. Agents whose creation names their owner were made in the
//! console and become `owner_agent`; the others stay `agent`.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Clients {
    Table,
    ClientId,
    Kind,
}

#[derive(DeriveIden)]
enum Agents {
    Table,
    Id,
    OwnerId,
}

#[derive(DeriveIden)]
enum AuditLog {
    Table,
    ClientId,
    Event,
    Subject,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let made_in_console = Query::select()
            .column((AuditLog::Table, AuditLog::ClientId))
            .from(AuditLog::Table)
            .inner_join(
                Agents::Table,
                Expr::col((Agents::Table, Agents::Id))
                    .equals((AuditLog::Table, AuditLog::ClientId)),
            )
            .and_where(Expr::col((AuditLog::Table, AuditLog::Event)).eq("agent.created"))
            .and_where(
                Expr::col((AuditLog::Table, AuditLog::Subject))
                    .equals((Agents::Table, Agents::OwnerId)),
            )
            .to_owned();
        manager
            .exec_stmt(
                Query::update()
                    .table(Clients::Table)
                    .value(Clients::Kind, "owner_agent")
                    .and_where(Expr::col(Clients::Kind).eq("agent"))
                    .and_where(Expr::col(Clients::ClientId).in_subquery(made_in_console))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .exec_stmt(
                Query::update()
                    .table(Clients::Table)
                    .value(Clients::Kind, "agent")
                    .and_where(Expr::col(Clients::Kind).eq("owner_agent"))
                    .to_owned(),
            )
            .await
    }
}
