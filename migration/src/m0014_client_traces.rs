//! The connection doctor (issue 30 item 12): each client's recent
//! authorization steps, with the reason of a refusal and what would fix
//! it. Bounded by the writer (`crate::doctor`): the newest rows per client,
//! and nothing older than a week. Never a secret, code or token.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum ClientTraces {
    Table,
    Id,
    ClientId,
    Attempt,
    At,
    Step,
    Outcome,
    Reason,
    Fix,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(ClientTraces::Table)
                    .col(
                        ColumnDef::new(ClientTraces::Id)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(ClientTraces::ClientId).string().not_null())
                    .col(ColumnDef::new(ClientTraces::Attempt).string())
                    .col(ColumnDef::new(ClientTraces::At).big_integer().not_null())
                    .col(ColumnDef::new(ClientTraces::Step).string().not_null())
                    .col(ColumnDef::new(ClientTraces::Outcome).string().not_null())
                    .col(ColumnDef::new(ClientTraces::Reason).text())
                    .col(ColumnDef::new(ClientTraces::Fix).text())
                    .to_owned(),
            )
            .await?;
        for (name, col) in [
            ("client_traces_client", ClientTraces::ClientId),
            ("client_traces_at", ClientTraces::At),
            ("client_traces_attempt", ClientTraces::Attempt),
        ] {
            let mut index = Index::create();
            index.name(name).table(ClientTraces::Table).col(col);
            if name == "client_traces_client" {
                index.col(ClientTraces::Id);
            }
            manager.create_index(index.to_owned()).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(ClientTraces::Table).to_owned())
            .await
    }
}
