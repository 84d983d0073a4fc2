//! The MCP gateway inside `arbiter serve` (`[mcp_gateway] config = "gateway.yaml"`), so
//! one process (one pod) serves both gRPC and MCP.
//!
//! The gateway stays what it is standalone, a client of this server's gRPC API: it is
//! pointed at the server's own listener over loopback and calls it with each MCP
//! client's key, with TLS and client certificates as `server.tls` demands. So every
//! decision takes the same path (authentication, roles, audit) as any other caller's,
//! and there is one gateway code path, not an in-process shortcut to the engine.
//!
//! `load` (at the start, before anything is opened), `bind` (after the gRPC listener,
//! whose address it needs) and `Running` (the gateway's task; its end takes the server
//! down with it).

mod load;
mod running;

pub use load::{bind, load};
pub use running::Running;
