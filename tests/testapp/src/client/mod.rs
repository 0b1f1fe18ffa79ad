//! The bounded clients: `testapp get` (HTTP/1.1, h2c, gRPC load) and `testapp echo` (TCP).

pub mod connection;
pub mod echo;
pub mod load;
pub mod summary;

pub use connection::{HttpConnection, Protocol};
pub use echo::{EchoConfig, EchoReport};
pub use load::{LoadConfig, Outcome};
pub use summary::Summary;
