use arbiter_server::cli::{self, Cli, Exit};
use clap::Parser;

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    arbiter_server::telemetry::init();
    if let Err(e) = cli::run(cli).await {
        let code = e.downcast_ref::<Exit>().map_or(1, |x| x.0);
        eprintln!("error: {e}");
        for cause in e.chain().skip(1) {
            eprintln!("  caused by: {cause}");
        }
        std::process::exit(code);
    }
}
