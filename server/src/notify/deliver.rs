//! One worker per endpoint: takes events from its bounded queue in order and POSTs
//! each, signed afresh per attempt, retrying with exponential backoff and jitter until
//! a 2xx answer, the retry window or the attempt cap. The worker is the only thing
//! that waits on the receiver; nothing on the decision path waits on the worker.

use super::cursor::Progress;
use super::event::Event;
use super::metrics::EndpointMetrics;
use super::payload;
use super::settings::{Endpoint, NotificationSettings};
use anyhow::Context;
use rand::Rng;
use rustls::pki_types::pem::PemObject;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;

#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub window: Duration,
    pub max_attempts: u32,
    pub initial: Duration,
    pub max_delay: Duration,
}

impl RetryPolicy {
    pub fn from_settings(s: &NotificationSettings) -> Self {
        Self {
            window: Duration::from_secs(s.retry_window_s),
            max_attempts: s.max_attempts,
            initial: Duration::from_millis(s.retry_initial_ms),
            max_delay: Duration::from_millis(s.retry_max_delay_ms),
        }
    }

    /// The wait after failed attempt `n` (1-based): initial · 2^(n−1), capped, then a
    /// random point in its upper half so retries of many events spread out.
    pub fn delay(&self, n: u32, rng: &mut impl Rng) -> Duration {
        let exp = self.initial.saturating_mul(
            1u32.checked_shl(n.saturating_sub(1).min(31))
                .unwrap_or(u32::MAX),
        );
        let d = exp.min(self.max_delay);
        d / 2 + d.mul_f64(rng.gen_range(0.0..0.5))
    }
}

pub struct Worker {
    pub endpoint: Endpoint,
    pub client: reqwest::Client,
    pub queue: mpsc::Receiver<Event>,
    pub metrics: EndpointMetrics,
    pub retry: RetryPolicy,
    pub console_url: Option<url::Url>,
    pub progress: Arc<Progress>,
}

impl Worker {
    pub async fn run(mut self) {
        while let Some(ev) = self.queue.recv().await {
            self.metrics.depth.dec();
            self.deliver(&ev).await;
            self.progress.done(ev.seq);
        }
    }

    async fn deliver(&self, ev: &Event) {
        let body = payload::body(self.endpoint.format, ev, self.console_url.as_ref());
        let started = Instant::now();
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            match self.attempt(ev, &body).await {
                Ok(()) => {
                    self.metrics.delivered.inc();
                    return;
                }
                Err(why) => {
                    self.metrics.failed.inc();
                    let delay = self.retry.delay(attempt, &mut rand::thread_rng());
                    if attempt >= self.retry.max_attempts
                        || started.elapsed() + delay > self.retry.window
                    {
                        self.metrics.dead_retries.inc();
                        tracing::error!(endpoint = %self.endpoint.name, id = %ev.id, event = ev.ty.name(),
                            attempts = attempt, error = %why, "webhook given up (dead letter)");
                        return;
                    }
                    tracing::warn!(endpoint = %self.endpoint.name, id = %ev.id, attempt, error = %why,
                        retry_in_ms = delay.as_millis() as u64, "webhook delivery failed; will retry");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    async fn attempt(&self, ev: &Event, body: &[u8]) -> Result<(), String> {
        // The attempt's time, not the event's (the spec's replay protection).
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let signature = self.endpoint.secret.sign(&ev.id, ts, body);
        let resp = self
            .client
            .post(self.endpoint.url.clone())
            .header("content-type", "application/json")
            .header("webhook-id", &ev.id)
            .header("webhook-timestamp", ts.to_string())
            .header("webhook-signature", signature)
            .body(body.to_vec())
            .timeout(self.endpoint.timeout)
            .send()
            .await
            .map_err(|e| error_chain(&e))?;
        let status = resp.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("answered {status}"))
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

/// An HTTP client for one endpoint: rustls with ring, trusting the endpoint's CA file
/// or else the system roots, never following redirects (the spec counts a 3xx as a
/// failure, and a redirect could point the signed event somewhere else).
pub fn client(endpoint: &Endpoint) -> anyhow::Result<reqwest::Client> {
    let mut roots = rustls::RootCertStore::empty();
    match &endpoint.ca_file {
        Some(path) => {
            let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
                roots.add(cert.with_context(|| format!("parsing {}", path.display()))?)?;
            }
        }
        None if endpoint.url.scheme() == "https" => {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                // A system root rustls cannot read is skipped, as the platform verifiers do.
                let _ = roots.add(cert);
            }
        }
        None => {}
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("arbiter/", env!("CARGO_PKG_VERSION")))
        .build()
        .context("building the webhook HTTP client")
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter_in_the_upper_half() {
        let p = RetryPolicy {
            window: Duration::from_secs(86_400),
            max_attempts: 30,
            initial: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
        };
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for (n, full) in [(1, 1), (2, 2), (3, 4), (7, 60), (40, 60)] {
            let d = p.delay(n, &mut rng);
            let full = Duration::from_secs(full);
            assert!(
                d >= full / 2 && d <= full,
                "attempt {n}: {d:?} outside [{:?}, {full:?}]",
                full / 2
            );
        }
    }
}
