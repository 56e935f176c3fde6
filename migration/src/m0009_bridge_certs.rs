//! Bridge certificates (issue 16): one Ed25519 CA per epoch, shared by
//! every node, and the certificates issued under it (so that a token
//! requested with a certified key names the certificate in its `cnf`).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum CaEpochs {
    Table,
    Epoch,
    PrivateKeySealed,
    CertificateDer,
    StartedAt,
    NotAfter,
    DroppedAt,
}

#[derive(DeriveIden)]
enum BridgeCerts {
    Table,
    Serial,
    AgentId,
    Jkt,
    X5tS256,
    Epoch,
    IssuedAt,
    NotAfter,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(CaEpochs::Table)
                    .col(
                        ColumnDef::new(CaEpochs::Epoch)
                            .big_integer()
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(CaEpochs::PrivateKeySealed)
                            .binary()
                            .not_null(),
                    )
                    .col(ColumnDef::new(CaEpochs::CertificateDer).binary().not_null())
                    .col(ColumnDef::new(CaEpochs::StartedAt).big_integer().not_null())
                    .col(ColumnDef::new(CaEpochs::NotAfter).big_integer().not_null())
                    .col(ColumnDef::new(CaEpochs::DroppedAt).big_integer().null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(BridgeCerts::Table)
                    .col(
                        ColumnDef::new(BridgeCerts::Serial)
                            .string_len(64)
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(BridgeCerts::AgentId)
                            .string_len(64)
                            .not_null(),
                    )
                    .col(ColumnDef::new(BridgeCerts::Jkt).string_len(64).not_null())
                    .col(
                        ColumnDef::new(BridgeCerts::X5tS256)
                            .string_len(64)
                            .not_null(),
                    )
                    .col(ColumnDef::new(BridgeCerts::Epoch).big_integer().not_null())
                    .col(
                        ColumnDef::new(BridgeCerts::IssuedAt)
                            .big_integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(BridgeCerts::NotAfter)
                            .big_integer()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("bridge_certs_key")
                    .table(BridgeCerts::Table)
                    .col(BridgeCerts::AgentId)
                    .col(BridgeCerts::Jkt)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("bridge_certs_not_after")
                    .table(BridgeCerts::Table)
                    .col(BridgeCerts::NotAfter)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(BridgeCerts::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(CaEpochs::Table).to_owned())
            .await
    }
}
