//! `tollgate limits KRAKEND.json [--listen ADDR:PORT] [--timeout DURATION]
//! [--print-config envoy-ratelimit|limitador]`, and the fleet part of `tollgate check`.

use crate::limits::config::{self, LimitsConfig};
use crate::limits::print::{self, Engine};
use crate::limits::service::{self, Limits};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

pub const USAGE: &str = "tollgate limits <krakend.json> [--listen ADDR:PORT] [--timeout DURATION] [--print-config envoy-ratelimit|limitador]";

/// Default listen address.
pub const LISTEN: &str = "127.0.0.1:8083";
/// Default bound on one operation (Redis round trips and retries).
pub const TIMEOUT_MS: u64 = 1_000;

/// Runs the command; `doc` is the parsed KrakenD file.
pub fn main(doc: &Value, args: &[String]) -> Result<(), String> {
    let mut listen = LISTEN.to_string();
    let mut timeout_ms = TIMEOUT_MS;
    let mut engine = None;
    let mut rest = args.iter();
    while let Some(flag) = rest.next() {
        let value = rest
            .next()
            .ok_or(format!("{flag} needs a value\nusage: {USAGE}"))?;
        match flag.as_str() {
            "--listen" => listen = value.clone(),
            "--timeout" => {
                timeout_ms = crate::config::parse_duration_ms(value)
                    .ok()
                    .filter(|ms| *ms > 0)
                    .ok_or(format!(
                        "--timeout: \"{value}\" is not a duration above 0 (examples: 250ms, 1s)"
                    ))?
            }
            "--print-config" => {
                engine = Some(Engine::parse(value).ok_or(format!(
                    "--print-config: \"{value}\" is not envoy-ratelimit or limitador"
                ))?)
            }
            _ => return Err(format!("unknown option {flag}\nusage: {USAGE}")),
        }
    }
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    // Printing needs no Redis: addresses are checked only when serving.
    let cfg = config::compile(doc, &env, engine.is_none()).map_err(|e| e.to_string())?;
    if let Some(engine) = engine {
        let (out, notes) = print::render(&cfg, engine);
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
        for n in notes {
            eprintln!("note: {n}");
        }
        return Ok(());
    }
    if cfg.quotas.is_empty() && cfg.rate_limits.is_empty() {
        return Err(
            "nothing to serve: no quota names a Redis pool and no qos/ratelimit/*/redis is set"
                .into(),
        );
    }
    for w in &cfg.warnings {
        eprintln!("warning: {w}");
    }
    serve(cfg, &listen, Duration::from_millis(timeout_ms))
}

fn serve(cfg: LimitsConfig, listen: &str, timeout: Duration) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| format!("--listen {listen}: {e}"))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let limits = Arc::new(Limits::new(cfg, service::system_clock(), timeout)?);
        // The readiness line tests and scripts wait for.
        println!("listening on {addr}");
        let stop = async {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
            }
        };
        service::serve(limits, listener, stop).await
    })
}

/// `tollgate check`: the fleet limits of a document that keeps anything in Redis (every
/// address resolved now, when `resolve`). A quota names its store explicitly (a pool, a
/// cluster, or `per-envoy`): the filter's compile refuses the rest.
pub fn check(doc: &Value, resolve: bool) -> (Vec<String>, Vec<String>) {
    let placeholder = |_: &str| Some("placeholder".to_string());
    if !config::uses_redis(doc) {
        return (Vec::new(), Vec::new());
    }
    match config::compile(doc, &placeholder, resolve) {
        Ok(c) => (Vec::new(), c.warnings),
        Err(e) => (vec![e.to_string()], Vec::new()),
    }
}
