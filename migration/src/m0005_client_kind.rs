//! Who made a client, and which resources it may introspect (issue 12):
//! `kind` decides whether the client may use `client_credentials` for a
//! resource; `introspects` names the resources whose tokens it may
//! introspect (`*`: any).
//!
//! Existing rows: a client without a registration access token was made
//! by an operator (the CLI issues none); the others came through DCR, and
//! whether an initial access token was used was not recorded, so they are
//! `dynamic`, the kind with the fewest rights.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Clients {
    Table,
    Kind,
    Introspects,
    RegistrationAccessTokenHash,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // SQLite alters one column per statement.
        manager
            .alter_table(
                Table::alter()
                    .table(Clients::Table)
                    .add_column(
                        ColumnDef::new(Clients::Kind)
                            .string_len(32)
                            .not_null()
                            .default("dynamic"),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Clients::Table)
                    .add_column(ColumnDef::new(Clients::Introspects).json().null())
                    .to_owned(),
            )
            .await?;
        manager
            .exec_stmt(
                Query::update()
                    .table(Clients::Table)
                    .value(Clients::Kind, "operator")
                    .and_where(Expr::col(Clients::RegistrationAccessTokenHash).is_null())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in [Clients::Introspects, Clients::Kind] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Clients::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
