//! Pure protocol helpers: parsing and checking values defined by the RFCs.
//! Nothing here touches storage or HTTP.

pub mod cimd;
pub mod client_assertion;
pub mod client_kind;
pub mod client_metadata;
pub mod error;
pub mod form;
pub mod grant_type;
pub mod metadata;
pub mod pkce;
pub mod resource;
pub mod scope;
pub mod single_use;
