//! The mesh's test application.
//!
//! One binary, four modes, used by the lab, the demo and the end-to-end tests:
//!
//! - `testapp serve`: an HTTP server (HTTP/1.1 and HTTP/2 prior knowledge on one port, gRPC
//!   over the same port) that answers every request with who it is and what it saw, can be told
//!   to fail or delay a share of requests (or, per request, answer a chosen status or gRPC
//!   status), echoes raw bytes after an HTTP/1.1 Upgrade, plus a pure TCP echo. With
//!   `RUST_LOG=info,request=debug` it logs every request it answers (method, path, query,
//!   host, status), so a test can see what reached it when the answer went to nobody.
//! - `testapp get`: a bounded HTTP/gRPC client that prints one summary JSON line.
//! - `testapp echo`: a TCP echo client, optionally holding the stream open.
//! - `testapp upgrade`: an HTTP/1.1 Upgrade client that echoes a marker on the upgraded
//!   connection and closes it.
//!
//! The clients refuse targets outside loopback and the private ranges the lab uses
//! ([`target`]), so a typo can never send test load to the outside world.

pub mod cli;
pub mod client;
pub mod grpc;
pub mod sampling;
pub mod server;
pub mod shutdown;
pub mod target;
