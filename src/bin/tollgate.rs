//! `tollgate`: host tool for tollgate configs.
//!
//! - `tollgate check krakend.json`: validate against the extended KrakenD schema and
//!   tollgate's own rules; print every error with its JSON path; exit 1 on error. With
//!   `--explain`, first a migration report: every namespace of the file, implemented, ignored
//!   inside Envoy (a warning) or refused, and why.
//! - `tollgate envoy krakend.json [--listen A:P] [--admin A:P] [--wasm PATH | --native PATH]
//!   [--ca-file PATH] [--edge NAME=VALUE]...`: print an Envoy bootstrap (YAML) that runs the
//!   config, hardened for the edge (`envoy::Edge`); with `--native`, through the native
//!   module (`libtollgate.so`, docs/native.md) instead of the .wasm. With `--limits
//!   HOST:PORT`, the cluster of the fleet limits service (required when the document keeps
//!   budgets or rate limits in Redis).
//!   With `--dynamic DIR`, the filter configuration and the clusters come from files in DIR
//!   that Envoy watches (`apply::init_dynamic` writes the first ones).
//! - `tollgate apply krakend.json DIR`: validate like `check`, then swap the running
//!   configuration of an Envoy started with `--dynamic DIR`, without a restart (`apply`).
//! - `tollgate k8s krakend.json --flavor envoy-gateway|istio [...]`: print the Kubernetes
//!   manifests that load the filter where those control planes manage Envoy (`k8s`).
//! - `tollgate schema`: print the extended JSON Schema (for editors' `$schema`).
//! - `tollgate limits krakend.json [--listen A:P] ...`: the fleet limits service (Envoy's rate
//!   limit protocol, counters in Redis), or `--print-config` for envoyproxy/ratelimit or Limitador.

use std::process::ExitCode;
use std::time::Duration;
use tollgate::apply;
use tollgate::config::{env, krakend};
use tollgate::envoy::{self, Options, OPTIONS_USAGE};
use tollgate::{k8s, schema};

const USAGE: &str = "usage:
  tollgate check <krakend.json> [--explain]   (--explain: per namespace, implemented / ignored inside Envoy / refused, and why)
  tollgate envoy <krakend.json> OPTIONS   (edge limits: docs/operations.md; --dynamic: live updates)
  tollgate apply <krakend.json> <DIR> [--wait SECONDS]
  tollgate k8s <krakend.json> K8S_OPTIONS
  tollgate schema
  tollgate limits <krakend.json> [--listen ADDR:PORT] [--timeout DURATION] [--print-config envoy-ratelimit|limitador]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("check") => check(&args[1..]),
        Some("envoy") => emit_envoy(&args[1..]),
        Some("limits") => {
            load(args.get(1)).and_then(|(_, doc)| tollgate::limits::run::main(&doc, &args[2..]))
        }
        Some("apply") => apply_config(&args[1..]),
        Some("schema") => schema::extended().map(|s| {
            println!("{}", serde_json::to_string_pretty(&s).unwrap_or_default());
        }),
        Some("k8s") => emit_k8s(&args[1..]),
        _ => Err(format!(
            "{USAGE}\nOPTIONS: {OPTIONS_USAGE}\nK8S_OPTIONS: {}",
            k8s::USAGE
        )),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("{msg}");
            ExitCode::FAILURE
        }
    }
}

/// Reads the file and parses JSON (body generator templates inlined).
fn load(path: Option<&String>) -> Result<(String, serde_json::Value), String> {
    let path = path.ok_or(USAGE)?;
    apply::read_config(path).map_err(|e| format!("{path}: {e}"))
}

fn check(args: &[String]) -> Result<(), String> {
    let explain = args.iter().any(|a| a == "--explain");
    let args: Vec<String> = args.iter().filter(|a| *a != "--explain").cloned().collect();
    let (_, doc) = load(args.first())?;
    let path = args.first().map(String::as_str).unwrap_or_default();
    if explain {
        // The migration report comes first, also for a file the check refuses.
        println!("{path}: namespaces (KrakenD -> tollgate)");
        for line in krakend::explain(&doc) {
            println!("  {line}");
        }
    }
    let gw = apply::check(&doc).map_err(|errors| {
        format!(
            "{path}: {} error(s)\n  {}",
            errors.len(),
            errors.join("\n  ")
        )
    })?;
    for w in &gw.warnings {
        println!("warning: {w}");
    }
    let vars = env::referenced(&doc);
    println!(
        "{path}: ok ({} endpoint(s), {} cluster(s); environment variables needed at runtime: {})",
        gw.endpoints.len(),
        gw.clusters().len(),
        if vars.is_empty() {
            "none".to_string()
        } else {
            vars.join(", ")
        }
    );
    Ok(())
}

fn emit_envoy(args: &[String]) -> Result<(), String> {
    let (text, doc) = load(args.first())?;
    // One validation path: no bootstrap for a document `tollgate check` refuses.
    let path = args.first().map(String::as_str).unwrap_or_default();
    let gw = apply::check(&doc).map_err(|errors| {
        format!(
            "{path}: {} error(s)\n  {}",
            errors.len(),
            errors.join("\n  ")
        )
    })?;
    let rest = args.get(1..).unwrap_or_default();
    let o = Options::from_args(&doc, rest)?;
    envoy::check_limits(&gw, &o).map_err(|e| format!("{path}: {e}"))?;
    let bootstrap = if o.dynamic.is_some() {
        apply::init_dynamic(&gw, &doc, &text, rest, &o)?
    } else {
        envoy::bootstrap(&gw, &doc, &text, &o)
    };
    print!("{}", envoy::to_yaml(&bootstrap)?);
    Ok(())
}

fn apply_config(args: &[String]) -> Result<(), String> {
    let (Some(config), Some(dir)) = (args.first(), args.get(1)) else {
        return Err(USAGE.to_string());
    };
    let wait = match args.get(2..) {
        None | Some([]) => 30,
        Some([flag, secs]) if flag == "--wait" => secs
            .parse()
            .map_err(|_| format!("--wait {secs}: not a number of seconds"))?,
        Some(_) => return Err(USAGE.to_string()),
    };
    println!(
        "{}",
        apply::apply(config, std::path::Path::new(dir), Duration::from_secs(wait))?
    );
    Ok(())
}

fn emit_k8s(args: &[String]) -> Result<(), String> {
    let (_, doc) = load(args.first())?;
    let path = args.first().map(String::as_str).unwrap_or_default();
    // Redis addresses are names of the target cluster: they need not resolve here.
    let gw = apply::check_resolving(&doc, false).map_err(|errors| {
        format!(
            "{path}: {} error(s)\n  {}",
            errors.len(),
            errors.join("\n  ")
        )
    })?;
    let o = k8s::Options::from_args(args.get(1..).unwrap_or_default())?;
    let docs = k8s::manifests(&gw, &doc, &o).map_err(|e| format!("{path}: {e}"))?;
    let keys = env::referenced(&doc);
    let mut header = format!(
        "tollgate {} for {}: generated by `tollgate k8s` from {path}; see docs/operations.md.\nNeeds: the .wasm as an OCI image at {} (make oci), and the Secret {}/{} with the keys: {}.\n  kubectl -n {} create secret generic {}{}\n{}",
        env!("CARGO_PKG_VERSION"),
        match o.flavor {
            k8s::Flavor::EnvoyGateway => "Envoy Gateway",
            k8s::Flavor::Istio => "Istio",
        },
        o.image,
        o.namespace,
        o.secret,
        if keys.is_empty() { "none".to_string() } else { keys.join(", ") },
        o.namespace,
        o.secret,
        keys.iter().map(|k| format!(" --from-literal={k}=...")).collect::<String>(),
        k8s::requirements(o.flavor),
    );
    if gw.uses_fleet() {
        header.push_str(&format!("\nBudgets and rate limits in Redis: the limits service runs from {} (the Dockerfile's tools stage) and reaches Redis at the addresses of $.extra_config.redis (yours; not deployed here).", o.limits_image));
    }
    print!("{}", k8s::to_yaml(&docs, &header)?);
    Ok(())
}
