//! `arbiter bench`: a load generator against a running server. Closed loop (N clients,
//! each sends its next request when the previous answer arrives) or fixed rate (open
//! loop; latency counted from the scheduled send time, so a stall is not hidden).

use super::term::say;
use arbiter_client::Client;
use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Target {
    /// The empty `Ping` RPC: the cost of a tonic unary round trip.
    Ping,
    /// A full-pipeline Evaluate with a durable audit entry.
    Evaluate,
    /// A gated action as an agent runs it: Evaluate with a cost, then Record the
    /// outcome; every 16th call asks for a tool the policy denies (a logged DENY).
    Mixed,
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[arg(long, env = "ARBITER_ADDR", default_value = "http://127.0.0.1:50051")]
    pub addr: String,
    #[arg(long, value_enum, default_value = "evaluate")]
    pub target: Target,
    /// Concurrent clients (closed loop) or the in-flight limit (fixed rate).
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Requests per second; omit for a closed loop.
    #[arg(long)]
    pub rate: Option<u64>,
    /// Measured seconds.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Unmeasured warm-up seconds.
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// Agent id used for Evaluate (must be allowed `bench_tool` by the server's policy).
    #[arg(long, default_value = "bench-agent")]
    pub agent: String,
    /// API key of an agent principal bound to `--agent` (needed once principals exist).
    #[arg(long, env = "ARBITER_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

async fn call(c: &Client, target: Target, agent: &str, n: u64) -> bool {
    match target {
        Target::Ping => c.ping().await.is_ok(),
        Target::Evaluate => c
            .evaluate(agent)
            .session(format!("bench-{}", n % 64))
            .tool("bench_tool")
            .cost_micro_usd(1)
            .send()
            .await
            .is_ok_and(|d| d.allowed()),
        Target::Mixed => mixed(c, agent, n).await,
    }
}

async fn mixed(c: &Client, agent: &str, n: u64) -> bool {
    let tool = if n % 16 == 15 {
        "bench_denied"
    } else {
        "bench_tool"
    };
    let Ok(d) = c
        .evaluate(agent)
        .session(format!("bench-{}", n % 64))
        .tool(tool)
        .cost_micro_usd(2)
        .send()
        .await
    else {
        return false;
    };
    if !d.allowed() {
        return tool == "bench_denied";
    }
    c.record(&d.decision_id)
        .outcome(arbiter_client::ActionOutcome::Success)
        .cost_micro_usd(1)
        .send()
        .await
        .is_ok()
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

pub async fn run(a: BenchArgs) -> anyhow::Result<()> {
    let client = super::remote::connect(&super::Remote {
        addr: a.addr.clone(),
        timeout: 10.0,
        api_key: a.api_key.clone(),
        tls_ca: None,
        tls_cert: None,
        tls_key: None,
        tls_domain: None,
    })
    .await?;
    let hist = Arc::new(Mutex::new(histogram()));
    let errors = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let total = Duration::from_secs_f64(a.warmup + a.duration);
    let start = Instant::now();
    let measure_from = start + Duration::from_secs_f64(a.warmup);
    let end = start + total;

    match a.rate {
        None => {
            let mut tasks = Vec::new();
            for worker in 0..a.concurrency {
                let (c, hist, errors, agent) = (
                    client.clone(),
                    hist.clone(),
                    errors.clone(),
                    a.agent.clone(),
                );
                let target = a.target;
                tasks.push(tokio::spawn(async move {
                    let mut local = histogram();
                    let mut n = worker as u64;
                    loop {
                        let t0 = Instant::now();
                        if t0 >= end {
                            break;
                        }
                        let ok = call(&c, target, &agent, n).await;
                        n += 1;
                        if t0 >= measure_from {
                            if ok {
                                let _ = local.record(t0.elapsed().as_micros().max(1) as u64);
                            } else {
                                errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            }
                        }
                    }
                    hist.lock()
                        .expect("histogram lock")
                        .add(&local)
                        .expect("same bounds");
                }));
            }
            for t in tasks {
                t.await?;
            }
        }
        Some(rate) => {
            let gate = Arc::new(tokio::sync::Semaphore::new(a.concurrency.max(1)));
            let interval = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
            let mut tasks = Vec::new();
            let mut n = 0u64;
            loop {
                let scheduled = start + interval * n as u32;
                if scheduled >= end {
                    break;
                }
                tokio::time::sleep_until(scheduled.into()).await;
                let permit = gate.clone().acquire_owned().await?;
                let (c, hist, errors, agent) = (
                    client.clone(),
                    hist.clone(),
                    errors.clone(),
                    a.agent.clone(),
                );
                let target = a.target;
                let i = n;
                tasks.push(tokio::spawn(async move {
                    let ok = call(&c, target, &agent, i).await;
                    drop(permit);
                    if scheduled >= measure_from {
                        if ok {
                            let us = scheduled.elapsed().as_micros().max(1) as u64;
                            let _ = hist.lock().expect("histogram lock").record(us);
                        } else {
                            errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                }));
                n += 1;
            }
            for t in tasks {
                t.await?;
            }
        }
    }

    let h = hist.lock().expect("histogram lock");
    let ok = h.len();
    let errs = errors.load(std::sync::atomic::Ordering::Relaxed);
    let throughput = ok as f64 / a.duration;
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let target = format!("{:?}", a.target).to_lowercase();
    let mode = a.rate.map_or("closed".to_owned(), |r| format!("rate={r}"));
    if a.json {
        say!(
            "{{\"target\":\"{target}\",\"mode\":\"{mode}\",\"concurrency\":{},\"duration_s\":{},\"ok\":{ok},\"errors\":{errs},\"throughput\":{throughput:.1},\"p50_ms\":{:.3},\"p95_ms\":{:.3},\"p99_ms\":{:.3},\"max_ms\":{:.3}}}",
            a.concurrency, a.duration, ms(0.5), ms(0.95), ms(0.99), h.max() as f64 / 1000.0
        );
    } else {
        say!(
            "{target:<9} {mode:<10} c={:<4} ok={ok} errors={errs} throughput={throughput:.0}/s p50={:.3}ms p95={:.3}ms p99={:.3}ms max={:.3}ms",
            a.concurrency, ms(0.5), ms(0.95), ms(0.99), h.max() as f64 / 1000.0
        );
    }
    Ok(())
}
