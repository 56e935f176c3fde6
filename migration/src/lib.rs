//! Schema migrations, written with SeaQuery so that one definition serves
//! SQLite and PostgreSQL. Applied automatically at start-up.

pub use sea_orm_migration::prelude::*;

mod m0001_core;
mod m0002_code_flow;
mod m0003_refresh_retry;
mod m0004_dpop_jtis;
mod m0005_client_kind;
mod m0006_agents;
mod m0007_login_requests;
mod m0008_client_last_used;
mod m0009_bridge_certs;
mod m0010_user_admin;
mod m0011_passkeys;
mod m0012_boundaries;
mod m0013_console_agents;
mod m0014_client_traces;
mod m0015_status_lists;
mod m0016_events;
mod m0017_backchannel;
mod m0018_code_details;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m0001_core::Migration),
            Box::new(m0002_code_flow::Migration),
            Box::new(m0003_refresh_retry::Migration),
            Box::new(m0004_dpop_jtis::Migration),
            Box::new(m0005_client_kind::Migration),
            Box::new(m0006_agents::Migration),
            Box::new(m0007_login_requests::Migration),
            Box::new(m0008_client_last_used::Migration),
            Box::new(m0009_bridge_certs::Migration),
            Box::new(m0010_user_admin::Migration),
            Box::new(m0011_passkeys::Migration),
            Box::new(m0012_boundaries::Migration),
            Box::new(m0013_console_agents::Migration),
            Box::new(m0014_client_traces::Migration),
            Box::new(m0015_status_lists::Migration),
            Box::new(m0016_events::Migration),
            Box::new(m0017_backchannel::Migration),
            Box::new(m0018_code_details::Migration),
        ]
    }
}
