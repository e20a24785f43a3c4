//! Configuration changes without a restart (host-only, `cli` feature).
//!
//! `tollgate envoy KRAKEND.json --dynamic DIR` writes a bootstrap whose tollgate filter
//! configuration comes from Envoy's extension config discovery (ECDS), whose clusters come
//! from CDS, both read from files in DIR that Envoy watches (`path_config_source` with
//! `watched_directory`: a file moved into DIR makes Envoy read them again), and whose routes
//! (the request body each endpoint may buffer, `envoy::routes`) come from RDS, a file in
//! DIR/routes watched on its own. It writes the first versions of those files, and the
//! `tollgate envoy` arguments (`tollgate.args.json`) so that later files are built with the
//! same options.
//!
//! `tollgate apply KRAKEND.json DIR` validates the document with [`check`] (the function
//! `tollgate check` runs), refuses what a live update cannot change, then writes the
//! clusters (the new ones and the previous config's, so a request in flight never meets a
//! missing cluster), waits until Envoy has them, writes the routes when they change (an
//! endpoint added, removed, or given another `max_payload`) and waits until Envoy serves
//! them, then writes the filter configuration. Each
//! file is written to a temporary file in DIR and renamed over the old one (atomic). Envoy
//! builds a new filter configuration and VM from it; requests already under way finish on
//! the old one. Envoy refuses a filter configuration whose `on_configure` fails and keeps
//! the previous one serving; `apply` sees that on the admin interface, puts the previous
//! file back and fails.
//!
//! What a live update cannot change, and `apply` refuses (the message says to restart with
//! a new bootstrap): environment variables the VM was not given at start (its
//! `host_env_keys`: the variables the first config referenced plus `--env-key`s), and any
//! part of the bootstrap that the document shapes outside the filter and the clusters
//! (`jwt_authn` for `auth/validator`, the error shapes of Anthropic endpoints, KrakenD's
//! service timeouts).
//!
//! Shared data (budgets, rate-limit buckets, circuit breakers, tenant labels) belongs to the
//! VM id, not to one VM, so it outlives the update (measured on Envoy 1.40).

use crate::config::{env, krakend, Gateway};
use crate::envoy::{self, Options, CDS_FILE, ECDS_FILE, RDS_FILE};
use crate::schema;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The `tollgate envoy` arguments a dynamic directory was made with.
pub const ARGS_FILE: &str = "tollgate.args.json";

/// Secrets are not needed to check or generate: every `{{ env "X" }}` resolves to a placeholder.
pub fn placeholder(_: &str) -> Option<String> {
    Some("placeholder".to_string())
}

/// Reads a KrakenD document (text and JSON) for every `tollgate` command: the body
/// generators' template files are inlined ([`inline_templates`]), and the text is then the
/// document's pretty JSON (the filter has no file system to read them from). Errors do not
/// name the file (the caller does).
pub fn read_config(path: &str) -> Result<(String, Value), String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let mut doc: Value =
        serde_json::from_str(&text).map_err(|e| format!("$: invalid JSON: {e}"))?;
    let dir = Path::new(path).parent().unwrap_or(Path::new("."));
    if inline_templates(&mut doc, dir, "$")? {
        let text = serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?;
        return Ok((text, doc));
    }
    Ok((text, doc))
}

/// The namespaces whose `path` names a Go template file (KrakenD's body generators).
const TEMPLATE_NAMESPACES: &[&str] = &[
    "modifier/request-body-generator",
    "modifier/body-generator",
    "modifier/response-body-generator",
];

/// Replaces each body generator's `path` (a file, relative to `dir`) by `template` (its
/// text in base64, as KrakenD's inline form) where tollgate reads them: an endpoint's and
/// its backends' `extra_config` (not inside namespaces tollgate ignores, such as `ai/mcp`).
/// True when one was. An unreadable file is an error naming the JSON path.
pub fn inline_templates(doc: &mut Value, dir: &Path, at: &str) -> Result<bool, String> {
    let mut changed = false;
    let Some(endpoints) = doc.get_mut("endpoints").and_then(Value::as_array_mut) else {
        return Ok(false);
    };
    for (i, ep) in endpoints.iter_mut().enumerate() {
        let ep_at = format!("{at}.endpoints[{i}]");
        changed |= inline_extra(ep, dir, &ep_at)?;
        let Some(backends) = ep.get_mut("backend").and_then(Value::as_array_mut) else {
            continue;
        };
        for (j, b) in backends.iter_mut().enumerate() {
            changed |= inline_extra(b, dir, &format!("{ep_at}.backend[{j}]"))?;
        }
    }
    Ok(changed)
}

/// The body generators of one level's `extra_config`.
fn inline_extra(level: &mut Value, dir: &Path, at: &str) -> Result<bool, String> {
    let mut changed = false;
    if let Some(extra) = level.get_mut("extra_config").and_then(Value::as_object_mut) {
        for ns in TEMPLATE_NAMESPACES {
            if let Some(g) = extra.get_mut(*ns) {
                changed |= inline_one(g, dir, &format!("{at}.extra_config.{ns}"))?;
            }
        }
    }
    Ok(changed)
}

fn inline_one(v: &mut Value, dir: &Path, at: &str) -> Result<bool, String> {
    let Some(o) = v.as_object_mut() else {
        return Ok(false);
    };
    if o.contains_key("template") {
        return Ok(false);
    }
    let Some(file) = o.get("path").and_then(Value::as_str).map(str::to_string) else {
        return Ok(false);
    };
    let full = dir.join(&file);
    let text = std::fs::read(&full)
        .map_err(|e| format!("{at}.path: \"{file}\": {e} ({})", full.display()))?;
    o.remove("path");
    o.insert(
        "template".into(),
        Value::String(crate::support::encoding::base64_encode(&text)),
    );
    Ok(true)
}

/// Validates a KrakenD document against the extended schema and tollgate's own rules:
/// every error, each with its JSON path. `tollgate check` and `tollgate apply` both call it.
///
/// A KrakenD schema error inside a namespace tollgate ignores (KrakenD's own telemetry: its
/// playground logs with a backend `telemetry/logging.custom_format` its v2.13 schema does not
/// list) is no error here: the namespace's one warning line stands for it.
pub fn check(doc: &Value) -> Result<Gateway, Vec<String>> {
    check_resolving(doc, true)
}

/// [`check`]; `resolve`: whether every Redis address must resolve (DNS) here, which it need
/// not where the manifests for another network are written (`tollgate k8s`).
pub fn check_resolving(doc: &Value, resolve: bool) -> Result<Gateway, Vec<String>> {
    let mut errors: Vec<String> = match schema::extended().and_then(|s| schema::validate(&s, doc)) {
        Ok(errs) => errs
            .into_iter()
            .filter(|e| krakend::ignored_at(doc, error_path(e)).is_none())
            .map(|e| format!("schema: {e}"))
            .collect(),
        Err(e) => vec![e],
    };
    // The fleet limits' own rules (Redis pools, addresses, units): `tollgate limits` reads
    // the same document.
    let (fleet_errors, fleet_warnings) = crate::limits::run::check(doc, resolve);
    errors.extend(fleet_errors.into_iter().map(|e| format!("tollgate: {e}")));
    match Gateway::from_value(doc, &placeholder) {
        Ok(mut gw) if errors.is_empty() => {
            gw.warnings.extend(fleet_warnings);
            Ok(gw)
        }
        Ok(_) => Err(errors),
        Err(e) => {
            errors.push(format!("tollgate: {e}"));
            Err(errors)
        }
    }
}

/// The JSON path of a schema error (`$.a.b: message` → `$.a.b`).
fn error_path(e: &str) -> &str {
    e.split_once(": ").map_or(e, |(p, _)| p)
}

/// Writes `content` to `dir/name` atomically: a temporary file in the same directory,
/// renamed over the old one (Envoy's watched directory sees a file moved in, and never a
/// half-written one).
pub fn write_atomic(dir: &Path, name: &str, content: &str) -> Result<(), String> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let target = dir.join(name);
    std::fs::write(&tmp, content).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, &target).map_err(|e| format!("{}: {e}", target.display()))
}

fn pretty(v: &Value) -> String {
    let mut s = serde_json::to_string_pretty(v).unwrap_or_default();
    s.push('\n');
    s
}

/// `tollgate envoy ... --dynamic DIR`: creates DIR with the first ECDS and CDS files and the
/// arguments; returns the bootstrap.
pub fn init_dynamic(
    gw: &Gateway,
    doc: &Value,
    text: &str,
    args: &[String],
    o: &Options,
) -> Result<Value, String> {
    let dir = PathBuf::from(o.dynamic.as_deref().unwrap_or("."));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    write_atomic(&dir, ARGS_FILE, &pretty(&json!(args)))?;
    let cds = envoy::cds_resource(envoy::clusters(gw, o));
    write_atomic(&dir, CDS_FILE, &pretty(&cds))?;
    let routes = PathBuf::from(envoy::routes_dir(&dir.to_string_lossy()));
    std::fs::create_dir_all(&routes).map_err(|e| format!("{}: {e}", routes.display()))?;
    let rds = envoy::rds_resource(envoy::route_config(gw, doc, &o.edge));
    write_atomic(&routes, RDS_FILE, &pretty(&rds))?;
    let ecds = envoy::ecds_resource(text, &envoy::env_keys(doc, o), o);
    write_atomic(&dir, ECDS_FILE, &pretty(&ecds))?;
    Ok(envoy::bootstrap(gw, doc, text, o))
}

/// What is running: read back from the dynamic directory.
#[derive(Debug)]
struct Running {
    args: Vec<String>,
    /// The ECDS, CDS and RDS files as written.
    ecds_text: String,
    cds_text: String,
    rds_text: String,
    config_text: String,
    env_keys: Vec<String>,
}

fn read_running(dir: &Path) -> Result<Running, String> {
    let read = |name: &str| {
        let p = match name {
            RDS_FILE => PathBuf::from(envoy::routes_dir(&dir.to_string_lossy())).join(name),
            _ => dir.join(name),
        };
        std::fs::read_to_string(&p).map_err(|e| {
            format!(
                "{}: {e} (make the directory with `tollgate envoy KRAKEND.json --dynamic {}`)",
                p.display(),
                dir.display()
            )
        })
    };
    let args: Vec<String> = serde_json::from_str(&read(ARGS_FILE)?)
        .map_err(|e| format!("{}: {e}", dir.join(ARGS_FILE).display()))?;
    let ecds_text = read(ECDS_FILE)?;
    let cds_text = read(CDS_FILE)?;
    let rds_text = read(RDS_FILE)?;
    let ecds: Value = serde_json::from_str(&ecds_text)
        .map_err(|e| format!("{}: {e}", dir.join(ECDS_FILE).display()))?;
    let config = &ecds["resources"][0]["typed_config"]["config"];
    let config_text = config["configuration"]["value"]
        .as_str()
        .ok_or(format!(
            "{}: no tollgate filter configuration",
            dir.join(ECDS_FILE).display()
        ))?
        .to_string();
    let env_keys = config["vm_config"]["environment_variables"]["host_env_keys"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|k| k.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    Ok(Running {
        args,
        ecds_text,
        cds_text,
        rds_text,
        config_text,
        env_keys,
    })
}

/// Every `{{ env "X" }}` whose X is not in `known`, with the JSON path of its string.
pub fn unknown_env_refs(doc: &Value, known: &[String]) -> Vec<String> {
    fn walk(v: &Value, path: String, known: &[String], out: &mut Vec<String>) {
        match v {
            Value::String(_) => {
                for name in env::referenced(v) {
                    if !known.contains(&name) {
                        out.push(format!("{path}: environment variable {name}"));
                    }
                }
            }
            Value::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    walk(x, format!("{path}[{i}]"), known, out);
                }
            }
            Value::Object(m) => {
                for (k, x) in m {
                    walk(x, format!("{path}.{k}"), known, out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(doc, "$".into(), known, &mut out);
    out
}

/// The JSON pointer of the first place where `a` and `b` differ.
pub fn first_difference(a: &Value, b: &Value) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for k in x.keys().chain(y.keys()) {
                match (x.get(k), y.get(k)) {
                    (Some(p), Some(q)) => {
                        if let Some(d) = first_difference(p, q) {
                            return Some(format!("/{k}{d}"));
                        }
                    }
                    _ => return Some(format!("/{k}")),
                }
            }
            None
        }
        (Value::Array(x), Value::Array(y)) => {
            for (i, (p, q)) in x.iter().zip(y).enumerate() {
                if let Some(d) = first_difference(p, q) {
                    return Some(format!("/{i}{d}"));
                }
            }
            (x.len() != y.len()).then(|| format!("/{}", x.len().min(y.len())))
        }
        _ => (a != b).then(String::new),
    }
}

/// The files `apply` would write, once every check passed.
#[derive(Debug)]
pub struct Plan {
    pub ecds: Value,
    pub cds: Value,
    pub rds: Value,
    /// Clusters the new config routes to (Envoy must have them before the filter changes).
    pub clusters: Vec<String>,
    pub endpoints: usize,
    pub unchanged: bool,
}

/// Checks a new document against what runs in `dir` and builds the files to write.
fn plan(dir: &Path, text: &str, doc: &Value) -> Result<(Plan, Running, Options), String> {
    let gw = check(doc).map_err(|errs| {
        format!(
            "refused, nothing applied: {} error(s)\n  {}",
            errs.len(),
            errs.join("\n  ")
        )
    })?;
    let run = read_running(dir)?;
    let o = Options::from_args(doc, &run.args)?;
    envoy::check_limits(&gw, &o).map_err(|e| {
        format!("refused, nothing applied: {e} (the running Envoy was started without it: restart with a new bootstrap)")
    })?;
    let unknown = unknown_env_refs(doc, &run.env_keys);
    if !unknown.is_empty() {
        return Err(format!(
            "refused, nothing applied: the running Envoy passes only {} to the filter; a new variable needs a restart with a new bootstrap (`tollgate envoy ... --dynamic DIR --env-key NAME`):\n  {}",
            if run.env_keys.is_empty() { "no environment variable".to_string() } else { run.env_keys.join(", ") },
            unknown.join("\n  ")
        ));
    }
    let old_doc: Value = serde_json::from_str(&run.config_text)
        .map_err(|e| format!("the running configuration is not JSON: {e}"))?;
    let old_gw = Gateway::from_value(&old_doc, &placeholder)
        .map_err(|e| format!("the running configuration does not compile here: {e}"))?;
    let old_o = Options::from_args(&old_doc, &run.args)?;
    let before = envoy::bootstrap(&old_gw, &old_doc, &run.config_text, &old_o);
    let after = envoy::bootstrap(&gw, doc, text, &o);
    if let Some(at) = first_difference(&before, &after) {
        return Err(format!(
            "refused, nothing applied: this change needs a restart: the Envoy bootstrap changes at {at} (outside the filter configuration and the clusters: jwt_authn for auth/validator, the error shapes of Anthropic endpoints, KrakenD's service timeouts); generate it again with `tollgate envoy` and restart Envoy"
        ));
    }
    let new_clusters = envoy::clusters(&gw, &o);
    let names: Vec<String> = new_clusters
        .iter()
        .filter_map(|c| c["name"].as_str().map(String::from))
        .collect();
    // The previous config's clusters stay one more generation: requests it routed are
    // still under way while Envoy swaps the filter.
    let mut all = new_clusters;
    for c in envoy::clusters(&old_gw, &old_o) {
        if !all.iter().any(|n| n["name"] == c["name"]) {
            all.push(c);
        }
    }
    let ecds = envoy::ecds_resource(text, &run.env_keys, &o);
    let unchanged = pretty(&ecds) == run.ecds_text;
    Ok((
        Plan {
            ecds,
            cds: envoy::cds_resource(all),
            rds: envoy::rds_resource(envoy::route_config(&gw, doc, &o.edge)),
            clusters: names,
            endpoints: gw.endpoints.len(),
            unchanged,
        },
        run,
        o,
    ))
}

/// `tollgate apply KRAKEND.json DIR`: see the module doc. Returns the line to print.
pub fn apply(config_path: &str, dir: &Path, wait: Duration) -> Result<String, String> {
    let (text, doc) = read_config(config_path)
        .map_err(|e| format!("{config_path}: refused, nothing applied: {e}"))?;
    let (plan, run, o) = plan(dir, &text, &doc).map_err(|e| format!("{config_path}: {e}"))?;
    let version = plan.ecds["version_info"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if plan.unchanged {
        return Ok(format!(
            "{config_path}: unchanged (version {version} is running)"
        ));
    }
    let admin = Admin(format!("{}:{}", o.admin.0, o.admin.1));
    // A file moved into DIR makes Envoy read both files again (and rebuild the filter from
    // an unchanged one): the clusters are written only when they change.
    let cds = pretty(&plan.cds);
    if cds != run.cds_text {
        write_atomic(dir, CDS_FILE, &cds)?;
    }
    let deadline = Instant::now() + wait;
    if admin.get("/ready").is_err() {
        write_atomic(dir, ECDS_FILE, &pretty(&plan.ecds))?;
        return Ok(format!(
            "{config_path}: written (version {version}, {} endpoint(s)); not confirmed: Envoy's admin {} does not answer here",
            plan.endpoints, admin.0
        ));
    }
    admin.wait_clusters(&plan.clusters, deadline)?;
    let rds = pretty(&plan.rds);
    if rds != run.rds_text {
        let routes = PathBuf::from(envoy::routes_dir(&dir.to_string_lossy()));
        write_atomic(&routes, RDS_FILE, &rds)?;
        let version = plan.rds["version_info"].as_str().unwrap_or_default();
        admin.wait_routes(version, deadline)?;
    }
    let rejected_before = admin.stat(REJECTED).unwrap_or(0);
    write_atomic(dir, ECDS_FILE, &pretty(&plan.ecds))?;
    loop {
        if admin.ecds_version().as_deref() == Some(version.as_str()) {
            return Ok(format!(
                "{config_path}: applied (version {version}, {} endpoint(s), {} cluster(s)); Envoy serves it",
                plan.endpoints,
                plan.clusters.len()
            ));
        }
        if admin.stat(REJECTED).unwrap_or(0) > rejected_before || Instant::now() > deadline {
            // Put the running config back in the file, so a restart starts with it too.
            write_atomic(dir, ECDS_FILE, &run.ecds_text)?;
            return Err(format!(
                "{config_path}: Envoy refused the filter configuration (its log says why: `configuration rejected`); the previous configuration keeps serving and is back in {}",
                dir.join(ECDS_FILE).display()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

const REJECTED: &str = "extension_config_discovery.http_filter.tollgate.update_rejected";

/// A chunked HTTP/1.1 body, decoded (what a malformed one holds up to the fault).
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        let Some(chunk) = rest.get(..n) else {
            break;
        };
        if n == 0 {
            break;
        }
        out.push_str(chunk);
        body = rest.get(n..).unwrap_or_default().trim_start_matches("\r\n");
    }
    out
}

/// Envoy's admin interface, over plain HTTP/1.1 (host-only, no client library).
struct Admin(String);

impl Admin {
    fn get(&self, path: &str) -> Result<String, String> {
        let fail = |e: std::io::Error| format!("admin {}{path}: {e}", self.0);
        let addr = self
            .0
            .parse()
            .or_else(|_| {
                std::net::ToSocketAddrs::to_socket_addrs(&self.0)
                    .ok()
                    .and_then(|mut a| a.next())
                    .ok_or(())
            })
            .map_err(|_| format!("admin {}: not an address", self.0))?;
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(fail)?;
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(fail)?;
        // Envoy's admin does not speak HTTP/1.0.
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.0
        )
        .map_err(fail)?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).map_err(fail)?;
        let raw = String::from_utf8_lossy(&raw);
        let bad = || format!("admin {}{path}: unexpected answer", self.0);
        let (head, body) = raw.split_once("\r\n\r\n").ok_or_else(bad)?;
        if !head.starts_with("HTTP/1.1 200") {
            return Err(bad());
        }
        let chunked = head
            .lines()
            .any(|l| l.eq_ignore_ascii_case("transfer-encoding: chunked"));
        Ok(if chunked {
            dechunk(body)
        } else {
            body.to_string()
        })
    }

    fn stat(&self, name: &str) -> Option<u64> {
        let text = self.get(&format!("/stats?filter=^{name}$")).ok()?;
        text.lines().find_map(|l| {
            l.strip_prefix(name)?
                .strip_prefix(": ")?
                .trim()
                .parse()
                .ok()
        })
    }

    /// The version of the filter configuration Envoy serves (`/config_dump` shows the last
    /// one it received, even when it refused it; this stat only changes on success).
    fn ecds_version(&self) -> Option<String> {
        let name = "extension_config_discovery.http_filter.tollgate.version_text";
        let text = self.get(&format!("/stats?filter=^{name}$")).ok()?;
        text.lines().find_map(|l| {
            Some(
                l.strip_prefix(name)?
                    .strip_prefix(": ")?
                    .trim()
                    .trim_matches('"')
                    .to_string(),
            )
        })
    }

    /// Until every cluster is active in Envoy (a new one warms first: DNS, TLS).
    /// Waits until Envoy serves the route configuration of `version` (RDS's version text).
    fn wait_routes(&self, version: &str, deadline: Instant) -> Result<(), String> {
        let name = "http.tollgate.rds.tollgate.version_text";
        loop {
            let text = self
                .get(&format!("/stats?filter=^{name}$"))
                .unwrap_or_default();
            if text.contains(&format!("\"{version}\"")) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "Envoy has not taken the new routes (version {version}) in time; the filter configuration was not changed"
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait_clusters(&self, names: &[String], deadline: Instant) -> Result<(), String> {
        loop {
            let listed = self.get("/clusters").unwrap_or_default();
            let missing: Vec<&String> = names
                .iter()
                .filter(|n| !listed.lines().any(|l| l.starts_with(&format!("{n}::"))))
                .collect();
            if missing.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "Envoy has not made these clusters active in time: {}; the filter configuration was not changed",
                    missing.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn doc(s: &str) -> Value {
        serde_json::from_str(s).unwrap()
    }

    #[test]
    fn template_files_are_inlined_where_tollgate_reads_them() {
        let dir = std::env::temp_dir().join(format!("tollgate-inline-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("t.tmpl"), "{{ toJson .req_body }}").unwrap();
        let mut d = json!({"endpoints": [{"endpoint": "/x", "backend": [{"extra_config": {
                "modifier/body-generator": {"path": "t.tmpl", "content_type": "application/json"}}}]}],
            "extra_config": {"ai/mcp": {"servers": [{"extra_config": {
                "modifier/response-body-generator": {"path": "./absent.tmpl"}}}]}}});
        assert_eq!(inline_templates(&mut d, &dir, "$"), Ok(true));
        let g = &d["endpoints"][0]["backend"][0]["extra_config"]["modifier/body-generator"];
        assert_eq!(
            *g,
            json!({"template": "e3sgdG9Kc29uIC5yZXFfYm9keSB9fQ==", "content_type": "application/json"})
        );
        // Nothing else to inline: unchanged (an ignored namespace's files are not read).
        assert_eq!(inline_templates(&mut d, &dir, "$"), Ok(false));
        let mut d = json!({"endpoints": [{"extra_config": {"modifier/request-body-generator": {"path": "no.tmpl"}}}]});
        let e = inline_templates(&mut d, &dir, "$").unwrap_err();
        assert!(
            e.starts_with(
                "$.endpoints[0].extra_config.modifier/request-body-generator.path: \"no.tmpl\": "
            ),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unknown_env_refs_name_the_json_path() {
        let d = doc(
            r#"{"endpoints": [{"backend": [{"extra_config": {"modifier/martian": {"header.Modifier": {"value": "Bearer {{ env \"NEW_KEY\" }} {{ env \"OLD\" }}"}}}}]}]}"#,
        );
        assert_eq!(
            unknown_env_refs(&d, &["OLD".to_string()]),
            ["$.endpoints[0].backend[0].extra_config.modifier/martian.header.Modifier.value: environment variable NEW_KEY"]
        );
        assert!(unknown_env_refs(&d, &["OLD".into(), "NEW_KEY".into()]).is_empty());
    }

    #[test]
    fn chunked_bodies_are_decoded() {
        assert_eq!(
            dechunk("5\r\nhello\r\n7\r\n, world\r\n0\r\n\r\n"),
            "hello, world"
        );
        assert_eq!(dechunk("zz\r\n"), "");
        assert_eq!(dechunk("9\r\nshort"), "");
    }

    #[test]
    fn first_difference_is_a_json_pointer() {
        let a = json!({"a": [1, {"b": 2}], "c": 3});
        assert_eq!(first_difference(&a, &a), None);
        assert_eq!(
            first_difference(&a, &json!({"a": [1, {"b": 5}], "c": 3})),
            Some("/a/1/b".into())
        );
        assert_eq!(
            first_difference(&a, &json!({"a": [1], "c": 3})),
            Some("/a/1".into())
        );
        assert_eq!(
            first_difference(&a, &json!({"a": [1, {"b": 2}]})),
            Some("/c".into())
        );
    }

    fn config(endpoints: &str) -> String {
        format!(r#"{{"version": 3, "endpoints": [{endpoints}]}}"#)
    }

    const A: &str = r#"{"endpoint": "/a", "method": "POST", "backend": [{"host": ["http://127.0.0.1:9001"], "url_pattern": "/"}]}"#;
    const B: &str = r#"{"endpoint": "/b", "method": "POST", "backend": [{"host": ["http://127.0.0.1:9002"], "url_pattern": "/"}]}"#;

    fn dynamic_dir(text: &str, extra: &[&str]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "tollgate-apply-{}-{}",
            std::process::id(),
            crate::support::hash::fnv1a64(format!("{text}{extra:?}").as_bytes())
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let d = doc(text);
        let mut args: Vec<String> = vec!["--dynamic".into(), dir.display().to_string()];
        args.extend(extra.iter().map(|s| s.to_string()));
        let o = Options::from_args(&d, &args).unwrap();
        let gw = check(&d).unwrap();
        init_dynamic(&gw, &d, text, &args, &o).unwrap();
        dir
    }

    #[test]
    fn plan_keeps_the_previous_clusters_and_the_vm_environment() {
        let dir = dynamic_dir(&config(A), &["--env-key", "LATER_KEY"]);
        let text = config(B).replace(
            r#""url_pattern": "/"}"#,
            r#""url_pattern": "/", "extra_config": {"modifier/martian": {"header.Modifier": {"scope": ["request"], "name": "Authorization", "value": "{{ env \"LATER_KEY\" }}"}}}}"#,
        );
        let (p, run, _) = plan(&dir, &text, &doc(&text)).unwrap();
        assert_eq!(run.env_keys, ["LATER_KEY"]);
        let names: Vec<&str> = p.cds["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["tg_http_127.0.0.1_9002", "tg_http_127.0.0.1_9001"]);
        assert_eq!(p.clusters, ["tg_http_127.0.0.1_9002"]);
        let cfg = &p.ecds["resources"][0]["typed_config"]["config"];
        assert_eq!(
            cfg["vm_config"]["environment_variables"]["host_env_keys"],
            json!(["LATER_KEY"])
        );
        assert_eq!(cfg["configuration"]["value"], text);
        assert!(!p.unchanged);
        let (same, _, _) = plan(&dir, &config(A), &doc(&config(A))).unwrap();
        assert!(same.unchanged);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// An `ai/llm` endpoint buffers more than the catch-all route: its route comes with it,
    /// through RDS; the bootstrap does not change (before RDS, apply refused the change).
    #[test]
    fn routes_follow_the_endpoints_through_rds() {
        let dir = dynamic_dir(&config(A), &["--listen", "127.0.0.1:18080"]);
        let llm = r#"{"endpoint": "/v1/chat/completions", "method": "POST", "backend": [{"host": ["http://127.0.0.1:9001"], "url_pattern": "/v1/chat/completions", "extra_config": {"ai/llm": {"ollama": {"v1": {}}}}}]}"#;
        let text = config(&format!("{A}, {llm}"));
        let (p, run, _) = plan(&dir, &text, &doc(&text)).unwrap();
        let routes = &p.rds["resources"][0]["virtual_hosts"][0]["routes"];
        assert_eq!(routes[0]["match"]["path"], "/v1/chat/completions");
        assert_eq!(routes[0]["request_body_buffer_limit"], 16 << 20);
        assert_eq!(routes[1]["match"]["prefix"], "/");
        assert_ne!(pretty(&p.rds), run.rds_text);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn plan_refuses_invalid_configs_new_env_keys_and_bootstrap_changes() {
        let dir = dynamic_dir(&config(A), &[]);
        let refused = |text: &str| plan(&dir, text, &doc(text)).unwrap_err();
        let bad = config(&A.replace("\"POST\"", "\"FETCH\""));
        let e = refused(&bad);
        assert!(e.starts_with("refused, nothing applied"), "{e}");
        assert!(e.contains("$.endpoints[0].method"), "{e}");
        let key = config(&A.replace(
            r#""url_pattern": "/"}"#,
            r#""url_pattern": "/", "extra_config": {"modifier/martian": {"header.Modifier": {"scope": ["request"], "name": "X-Key", "value": "{{ env \"NEW_KEY\" }}"}}}}"#,
        ));
        let e = refused(&key);
        assert!(e.contains("needs a restart"), "{e}");
        assert!(
            e.contains("$.endpoints[0].backend[0].extra_config.modifier/martian.header.Modifier.value: environment variable NEW_KEY"),
            "{e}"
        );
        let timeouts = config(A).replace(
            "{\"version\": 3,",
            "{\"version\": 3, \"read_timeout\": \"5s\",",
        );
        let e = refused(&timeouts);
        assert!(
            e.contains("needs a restart") && e.contains("request_timeout"),
            "{e}"
        );
        // Nothing was written.
        let (p, _, _) = plan(&dir, &config(A), &doc(&config(A))).unwrap();
        assert!(p.unchanged);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
