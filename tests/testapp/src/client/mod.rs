//! The bounded clients: `testapp get` (HTTP/1.1, h2c, gRPC load), `testapp echo` (TCP) and
//! `testapp upgrade` (HTTP/1.1 Upgrade, then raw bytes).

pub mod connection;
pub mod echo;
pub mod load;
pub mod summary;
pub mod upgrade;

pub use connection::{HttpConnection, Protocol};
pub use echo::{EchoConfig, EchoReport};
pub use load::{LoadConfig, Outcome};
pub use summary::Summary;
pub use upgrade::{UpgradeConfig, UpgradeReport};
