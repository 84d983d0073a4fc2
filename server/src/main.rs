use arbiter_server::cli::{self, term::err_line, Cli, Command, Exit};
use clap::Parser;

/// mimalloc instead of glibc's malloc: every Evaluate allocates and frees hundreds of
/// small objects across the runtime's threads, and glibc's arenas (consolidation,
/// chunk unlinking) cost ≈ 23 % of the server's CPU at 32 clients (docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    // Only the server and the MCP gateway export traces, each under its own default
    // service name; operator commands run under the same environment and must not send
    // spans to its collector.
    let export = match cli.command {
        Command::Serve { .. } => Some("arbiter"),
        Command::McpGateway { .. } => Some("arbiter-mcp-gateway"),
        _ => None,
    };
    let telemetry = match arbiter_server::telemetry::init(export) {
        Ok(t) => t,
        Err(e) => {
            err_line(format_args!("error: {e:#}"));
            std::process::exit(1);
        }
    };
    let outcome = cli::run(cli).await;
    // Flush buffered spans before exiting, also after an error: the spans of a failed
    // start are the ones an operator looks for. Blocking, so off the worker threads.
    let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
    if let Err(e) = outcome {
        let code = e.downcast_ref::<Exit>().map_or(1, |x| x.0);
        // Error chains carry server messages, which may quote what a caller sent.
        err_line(format_args!("error: {e}"));
        for cause in e.chain().skip(1) {
            err_line(format_args!("  caused by: {cause}"));
        }
        std::process::exit(code);
    }
}
