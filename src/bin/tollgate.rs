//! `tollgate`: host tool for tollgate configs.
//!
//! - `tollgate check krakend.json`: validate against the extended KrakenD schema and
//!   tollgate's own rules; print every error with its JSON path; exit 1 on error.
//! - `tollgate envoy krakend.json [--listen A:P] [--admin A:P] [--wasm PATH | --native PATH]
//!   [--ca-file PATH] [--edge NAME=VALUE]...`: print an Envoy bootstrap (YAML) that runs the
//!   config, hardened for the edge (`envoy::Edge`); with `--native`, through the native
//!   module (`libtollgate.so`, docs/native.md) instead of the .wasm.
//! - `tollgate schema`: print the extended JSON Schema (for editors' `$schema`).

use std::process::ExitCode;
use tollgate::config::{env, Gateway};
use tollgate::envoy::{self, Options};
use tollgate::schema;

const USAGE: &str = "usage:
  tollgate check <krakend.json>
  tollgate envoy <krakend.json> [--listen ADDR:PORT] [--admin ADDR:PORT] [--wasm PATH | --native PATH]
                 [--ca-file PATH] [--edge NAME=VALUE]...   (edge limits: README, \"Edge limits\")
  tollgate schema";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("check") => check(&args[1..]),
        Some("envoy") => emit_envoy(&args[1..]),
        Some("schema") => schema::extended().map(|s| {
            println!("{}", serde_json::to_string_pretty(&s).unwrap_or_default());
        }),
        _ => Err(USAGE.to_string()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("{msg}");
            ExitCode::FAILURE
        }
    }
}

/// Reads the file and parses JSON.
fn load(path: Option<&String>) -> Result<(String, serde_json::Value), String> {
    let path = path.ok_or(USAGE)?;
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    let doc = serde_json::from_str(&text).map_err(|e| format!("{path}: $: invalid JSON: {e}"))?;
    Ok((text, doc))
}

/// Secrets are not needed to check or generate: every `{{ env "X" }}` resolves to a placeholder.
fn placeholder(_: &str) -> Option<String> {
    Some("placeholder".to_string())
}

fn check(args: &[String]) -> Result<(), String> {
    let (_, doc) = load(args.first())?;
    let path = args.first().map(String::as_str).unwrap_or_default();
    let schema = schema::extended()?;
    let mut errors: Vec<String> = schema::validate(&schema, &doc)?
        .into_iter()
        .map(|e| format!("schema: {e}"))
        .collect();
    let compiled = Gateway::from_value(&doc, &placeholder);
    if let Err(e) = &compiled {
        errors.push(format!("tollgate: {e}"));
    }
    if !errors.is_empty() {
        return Err(format!(
            "{path}: {} error(s)\n  {}",
            errors.len(),
            errors.join("\n  ")
        ));
    }
    if let Ok(gw) = compiled {
        for w in &gw.warnings {
            println!("warning: {w}");
        }
        let vars = env::referenced(&doc);
        println!(
            "{path}: ok ({} endpoint(s), {} cluster(s); environment variables needed at runtime: {})",
            gw.endpoints.len(),
            gw.clusters().len(),
            if vars.is_empty() { "none".to_string() } else { vars.join(", ") }
        );
    }
    Ok(())
}

fn emit_envoy(args: &[String]) -> Result<(), String> {
    let (text, doc) = load(args.first())?;
    let gw = Gateway::from_value(&doc, &placeholder).map_err(|e| e.to_string())?;
    let mut o = Options {
        edge: envoy::Edge::from_doc(&doc)?,
        ..Options::default()
    };
    let mut rest = args.iter().skip(1);
    while let Some(flag) = rest.next() {
        let value = rest
            .next()
            .ok_or(format!("{flag} needs a value\n{USAGE}"))?;
        match flag.as_str() {
            "--listen" => o.listen = addr(value)?,
            "--admin" => o.admin = addr(value)?,
            "--wasm" => o.wasm_path = value.clone(),
            "--native" => o.native_path = Some(value.clone()),
            "--ca-file" => o.ca_file = value.clone(),
            "--edge" => {
                let (name, v) = value
                    .split_once('=')
                    .ok_or(format!("--edge {value}: expected NAME=VALUE"))?;
                o.edge.set(name, v).map_err(|e| format!("--edge {e}"))?;
            }
            _ => return Err(format!("unknown option {flag}\n{USAGE}")),
        }
    }
    print!(
        "{}",
        envoy::to_yaml(&envoy::bootstrap(&gw, &doc, &text, &o))?
    );
    Ok(())
}

fn addr(s: &str) -> Result<(String, u16), String> {
    let (host, port) = s
        .rsplit_once(':')
        .ok_or(format!("{s}: expected ADDR:PORT"))?;
    let port = port.parse().map_err(|_| format!("{s}: bad port"))?;
    Ok((host.to_string(), port))
}
