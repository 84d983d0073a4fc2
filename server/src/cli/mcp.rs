//! `arbiter mcp tools list|approve|reject`: the operator's side of MCP tool pinning
//! (docs/mcp.md). Definitions come from upstream MCP servers and are untrusted text;
//! everything shown goes through `say!`, which escapes it.

use super::remote::{connect, fail, ts};
use super::term::say;
use super::Remote;
use arbiter_client::proto as pb;
use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub enum McpCommand {
    /// Tool pins: the trusted definition of each upstream tool and what waits.
    Tools {
        #[command(subcommand)]
        command: ToolsCommand,
    },
}

#[derive(Subcommand, Debug)]
pub enum ToolsCommand {
    /// List pins (with the waiting definitions in full).
    List {
        /// Only this upstream server.
        #[arg(long, default_value = "")]
        server: String,
        /// Only tools with a definition waiting for an operator.
        #[arg(long)]
        pending: bool,
    },
    /// Trust the waiting definition with this digest.
    Approve {
        server: String,
        tool: String,
        digest: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Reject the waiting definition with this digest (the tool stays hidden).
    Reject {
        server: String,
        tool: String,
        digest: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
}

fn state_name(state: i32) -> &'static str {
    match pb::ToolPinState::try_from(state) {
        Ok(pb::ToolPinState::Pending) => "pending",
        Ok(pb::ToolPinState::Rejected) => "rejected",
        Ok(pb::ToolPinState::Trusted) => "trusted",
        _ => "-",
    }
}

fn show(p: &pb::ToolPin) {
    let trusted = if p.trusted_digest.is_empty() {
        "never trusted".to_owned()
    } else {
        format!(
            "trusted {} by {} at {}",
            p.trusted_digest,
            p.trusted_by,
            ts(&p.trusted_at)
        )
    };
    say!("{}\t{}\t{}", p.server, p.tool, trusted);
    if !p.candidate_digest.is_empty() {
        say!(
            "\t{} {} reported by {} at {}",
            state_name(p.candidate_state),
            p.candidate_digest,
            p.candidate_seen_by,
            ts(&p.candidate_at)
        );
        say!("\t  now: {}", p.candidate_definition);
        if !p.trusted_definition.is_empty() {
            say!("\t  was: {}", p.trusted_definition);
        }
    }
}

pub async fn run(r: &Remote, cmd: McpCommand) -> anyhow::Result<()> {
    let McpCommand::Tools { command } = cmd;
    let c = connect(r).await?;
    match command {
        ToolsCommand::List { server, pending } => {
            let resp = c
                .list_tool_pins(pb::ListToolPinsRequest {
                    server,
                    pending_only: pending,
                })
                .await
                .map_err(fail)?;
            for p in &resp.pins {
                show(p);
            }
        }
        ToolsCommand::Approve {
            server,
            tool,
            digest,
            reason,
        } => {
            let resp = c
                .approve_tool_pin(pb::ApproveToolPinRequest {
                    server,
                    tool,
                    digest,
                    reason,
                })
                .await
                .map_err(fail)?;
            let p = resp.pin.unwrap_or_default();
            say!(
                "approved: {}/{} now trusts {} (audit entry {})",
                p.server,
                p.tool,
                p.trusted_digest,
                resp.audit_seq
            );
        }
        ToolsCommand::Reject {
            server,
            tool,
            digest,
            reason,
        } => {
            let resp = c
                .reject_tool_pin(pb::RejectToolPinRequest {
                    server,
                    tool,
                    digest: digest.clone(),
                    reason,
                })
                .await
                .map_err(fail)?;
            let p = resp.pin.unwrap_or_default();
            say!(
                "rejected: {}/{} stays hidden while it serves {digest} (audit entry {})",
                p.server,
                p.tool,
                resp.audit_seq
            );
        }
    }
    Ok(())
}
