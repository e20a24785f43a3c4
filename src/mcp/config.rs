//! The MCP namespaces, compiled: KrakenD's `ai/mcp` (service: the servers and their tools;
//! endpoint: `server_name`) and tollgate's own `ai/mcp-federation` (endpoint: one MCP
//! server in front of the endpoint's backends, each an upstream MCP server named by its
//! `ai/mcp-upstream`) and `ai/mcp-tools` (endpoint: who sees and calls which tool, and at
//! what rate).

use crate::config::reader::{parse_duration_ms, ConfigError, Obj, Result};
use crate::governance::ratelimit::{self, RateLimit};
use crate::governance::validate::{self, Schema};
use crate::routing::martian::{self, Modifiers};
use crate::routing::{cluster_name, HostUrl, PathPattern, UrlPattern};
use serde_json::{json, Map, Value};
use std::rc::Rc;

/// One `ai/mcp.servers[]` entry: an MCP server the gateway answers itself.
#[derive(Debug, Clone, PartialEq)]
pub struct Server {
    pub info: Info,
    pub tools: Vec<Tool>,
}

/// What an MCP server says of itself at `initialize`, and how it answers.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Info {
    pub name: String,
    pub title: String,
    pub version: String,
    pub instructions: String,
    /// Answers as JSON instead of an SSE stream of one event (KrakenD's default is SSE).
    pub json_response: bool,
    /// No sessions: `Mcp-Session-Id` is neither given out nor checked.
    pub stateless: bool,
}

/// The media type a tool's backend answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Media {
    #[default]
    Text,
    Image,
    Audio,
}

/// One tool of an `ai/mcp` server.
#[derive(Debug, Clone, PartialEq)]
pub struct Tool {
    pub name: String,
    /// The tool as `tools/list` shows it (name, title, description, schemas, annotations).
    pub listing: Value,
    pub media: Media,
    pub input: Option<Rc<Schema>>,
    pub output: Option<Rc<Schema>>,
    /// The backend's error message reaches the client (else a generic one).
    pub return_error_msg: bool,
    /// Client headers the workflow's backend gets (lowercase).
    pub input_headers: Vec<String>,
    pub workflow: Workflow,
}

/// A tool's workflow: its backend, called with the tool's arguments.
#[derive(Debug, Clone, PartialEq)]
pub struct Workflow {
    /// `workflow.endpoint`: its `{params}` are the tool's arguments.
    pub pattern: PathPattern,
    pub hosts: Vec<HostUrl>,
    pub cluster: String,
    pub url_pattern: UrlPattern,
    pub method: String,
    pub modifiers: Modifiers,
}

/// What an MCP endpoint is.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// KrakenD's MCP server (`ai/mcp.server_name`): tools run the workflows.
    Server(Rc<Server>),
    /// tollgate's federation: the endpoint's backends are upstream MCP servers.
    Federation(Federation),
}

/// `ai/mcp-federation`.
#[derive(Debug, Clone, PartialEq)]
pub struct Federation {
    pub info: Info,
    /// Between an upstream's name and its tool's name (`weather__forecast`).
    pub separator: String,
}

/// A compiled MCP endpoint: its kind and its tool policy.
#[derive(Debug, Clone, PartialEq)]
pub struct McpEndpoint {
    pub kind: Kind,
    pub policy: Policy,
}

impl McpEndpoint {
    pub fn info(&self) -> &Info {
        match &self.kind {
            Kind::Server(s) => &s.info,
            Kind::Federation(f) => &f.info,
        }
    }
}

/// `ai/mcp-tools`: which caller sees and calls which tool.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub rules: Vec<Rule>,
    /// Tools no rule names are visible and callable (default: only without rules).
    pub allow_unlisted: bool,
}

/// An endpoint without `ai/mcp-tools`: every tool, to every caller the endpoint admits.
impl Default for Policy {
    fn default() -> Self {
        Policy {
            rules: Vec::new(),
            allow_unlisted: true,
        }
    }
}

/// One rule: the tools it names (`*` ends a prefix), who may use them, at what rate.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub tools: Vec<String>,
    /// Any of these roles (API-key roles, JWT roles); empty: any caller.
    pub roles: Vec<String>,
    /// JWT claims: each named claim must hold one of its values.
    pub claims: Vec<(String, Vec<String>)>,
    pub rate_limit: Option<RateLimit>,
}

impl Rule {
    /// Whether the rule names the tool.
    pub fn names(&self, tool: &str) -> bool {
        self.tools.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => tool.starts_with(prefix),
            None => p == tool,
        })
    }
}

/// Service `ai/mcp`: the servers.
pub fn servers(
    v: &Value,
    path: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<Rc<Server>>> {
    let mut o = Obj::new(v, path)?;
    let list = o
        .opt_array("servers")?
        .ok_or_else(|| ConfigError::new(o.at("servers"), "is required"))?;
    let mut out: Vec<Rc<Server>> = Vec::with_capacity(list.len());
    for (i, s) in list.iter().enumerate() {
        let at = format!("{}[{i}]", o.at("servers"));
        let server = server(s, &at, lookup)?;
        if out.iter().any(|x| x.info.name == server.info.name) {
            return Err(ConfigError::new(
                format!("{at}.name"),
                format!("\"{}\" names two servers", server.info.name),
            ));
        }
        out.push(Rc::new(server));
    }
    o.finish(&[])?;
    Ok(out)
}

/// The fields of a server's self-description (shared with `ai/mcp-federation`).
fn info(o: &mut Obj<'_>, name: String) -> Result<Info> {
    let title = o.opt_str("title")?.unwrap_or(&name).to_string();
    let info = Info {
        title,
        version: o.opt_str("version")?.unwrap_or("0.0.0").to_string(),
        instructions: o.opt_str("instructions")?.unwrap_or_default().to_string(),
        json_response: o.opt_bool("json_response")?.unwrap_or(false),
        stateless: o.opt_bool("stateless")?.unwrap_or(false),
        name,
    };
    // Server-to-client pings need the GET stream, which the gateway does not offer.
    if let Some(p) = o.opt_str("ping_period")? {
        parse_duration_ms(p).map_err(|m| ConfigError::new(o.at("ping_period"), m))?;
    }
    Ok(info)
}

fn server(v: &Value, path: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<Server> {
    let mut o = Obj::new(v, path)?;
    let name = o.str("name")?.to_string();
    o.str("title")?;
    o.str("version")?;
    let info = info(&mut o, name)?;
    let mut tools: Vec<Tool> = Vec::new();
    for (i, t) in o.opt_array("tools")?.into_iter().flatten().enumerate() {
        let at = format!("{}[{i}]", o.at("tools"));
        let t = tool(t, &at, lookup)?;
        if tools.iter().any(|x| x.name == t.name) {
            return Err(ConfigError::new(
                format!("{at}.name"),
                format!("\"{}\" names two tools", t.name),
            ));
        }
        tools.push(t);
    }
    o.finish(&[])?;
    Ok(Server { info, tools })
}

/// KrakenD's snake_case hints as MCP's camelCase annotations.
fn annotations(o: &mut Obj<'_>, title: &str) -> Result<Option<Value>> {
    let Some(mut a) = o.opt_obj("annotations")? else {
        return Ok(None);
    };
    let mut out = Map::new();
    out.insert("title".into(), json!(title));
    for (ours, theirs) in [
        ("read_only_hint", "readOnlyHint"),
        ("destructive_hint", "destructiveHint"),
        ("idempotent_hint", "idempotentHint"),
        ("open_world_hint", "openWorldHint"),
    ] {
        if let Some(b) = a.opt_bool(ours)? {
            out.insert(theirs.into(), json!(b));
        }
    }
    a.finish(&[])?;
    Ok(Some(Value::Object(out)))
}

/// A JSON Schema of a tool, kept as written (for `tools/list`) and compiled.
fn schema(o: &mut Obj<'_>, key: &str) -> Result<Option<(Value, Rc<Schema>)>> {
    let Some(v) = o.get(key) else {
        return Ok(None);
    };
    if !v.is_object() {
        return Err(ConfigError::new(o.at(key), "expected a JSON Schema object"));
    }
    Ok(Some((
        v.clone(),
        Rc::new(validate::compile(v, &o.at(key))?),
    )))
}

fn tool(v: &Value, path: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<Tool> {
    let mut o = Obj::new(v, path)?;
    let name = o.str("name")?.to_string();
    let title = o.str("title")?.to_string();
    let description = o.str("description")?.to_string();
    let media = match o.opt_str("type")? {
        None | Some("text") => Media::Text,
        Some("image") => Media::Image,
        Some("audio") => Media::Audio,
        Some(other) => {
            return Err(ConfigError::new(
                o.at("type"),
                format!("\"{other}\" is not one of text, image, audio"),
            ))
        }
    };
    let input = schema(&mut o, "input_schema")?;
    let output = schema(&mut o, "output_schema")?;
    let mut listing = json!({
        "name": name, "title": title, "description": description,
        "inputSchema": input.as_ref().map_or_else(|| json!({"type": "object"}), |(v, _)| v.clone()),
    });
    if let (Some((v, _)), Some(l)) = (&output, listing.as_object_mut()) {
        l.insert("outputSchema".into(), v.clone());
    }
    if let (Some(a), Some(l)) = (annotations(&mut o, &title)?, listing.as_object_mut()) {
        l.insert("annotations".into(), a);
    }
    let input_headers = o
        .opt_strings("input_headers")?
        .unwrap_or_default()
        .iter()
        .map(|h| h.to_ascii_lowercase())
        .collect();
    let return_error_msg = o.opt_bool("return_error_msg")?.unwrap_or(false);
    let wf = o.required("workflow")?;
    let workflow = workflow(wf, &o.at("workflow"), lookup)?;
    o.finish(&[])?;
    Ok(Tool {
        name,
        listing,
        media,
        input: input.map(|(_, s)| s),
        output: output.map(|(_, s)| s),
        return_error_msg,
        input_headers,
        workflow,
    })
}

/// A workflow with one backend (KrakenD's merging of several, and its `extra_config`
/// pipeline stages, are refused by name).
fn workflow(v: &Value, path: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<Workflow> {
    let mut o = Obj::new(v, path)?;
    let pattern = PathPattern::parse(o.opt_str("endpoint")?.unwrap_or("/"))
        .map_err(|m| ConfigError::new(o.at("endpoint"), m))?;
    let list = o
        .opt_array("backend")?
        .ok_or_else(|| ConfigError::new(o.at("backend"), "is required"))?;
    let [b] = list.as_slice() else {
        return Err(ConfigError::new(
            o.at("backend"),
            "a tool's workflow must have exactly one backend (KrakenD's merging of several is not supported)",
        ));
    };
    let bpath = format!("{}[0]", o.at("backend"));
    let mut b = Obj::new(b, &bpath)?;
    let hosts = b
        .opt_strings("host")?
        .ok_or_else(|| ConfigError::new(b.at("host"), "is required"))?;
    let hosts = hosts
        .iter()
        .enumerate()
        .map(|(i, h)| {
            HostUrl::parse(h).map_err(|m| ConfigError::new(format!("{}[{i}]", b.at("host")), m))
        })
        .collect::<Result<Vec<_>>>()?;
    if hosts.is_empty() {
        return Err(ConfigError::new(b.at("host"), "needs at least one host"));
    }
    let url_pattern = UrlPattern::parse(b.str("url_pattern")?, &pattern)
        .map_err(|m| ConfigError::new(b.at("url_pattern"), m))?;
    let method = match b.opt_str("method")? {
        None => "GET".to_string(),
        Some(m) if ["GET", "POST", "PUT", "PATCH", "DELETE"].contains(&m) => m.to_string(),
        Some(m) => {
            return Err(ConfigError::new(
                b.at("method"),
                format!("\"{m}\" is not one of GET, POST, PUT, PATCH, DELETE"),
            ))
        }
    };
    let mut modifiers = Modifiers::default();
    if let Some(mut extra) = b.opt_obj("extra_config")? {
        if let Some(m) = extra.get("modifier/martian") {
            modifiers = martian::compile(m, &extra.at("modifier/martian"), lookup)?;
        }
        extra.finish(&[])?;
    }
    // `encoding` only says how KrakenD parses the answer: the gateway passes it as it is.
    b.finish(&["encoding"])?;
    o.finish(&[])?;
    Ok(Workflow {
        cluster: cluster_name(&hosts),
        pattern,
        hosts,
        url_pattern,
        method,
        modifiers,
    })
}

/// Endpoint `ai/mcp`: the server it serves.
pub fn attach(v: &Value, path: &str, servers: &[Rc<Server>]) -> Result<Rc<Server>> {
    let mut o = Obj::new(v, path)?;
    let name = o.str("server_name")?;
    let s = servers
        .iter()
        .find(|s| s.info.name == name)
        .ok_or_else(|| {
            ConfigError::new(
                o.at("server_name"),
                format!("\"{name}\" is not a server of the service-level ai/mcp"),
            )
        })?;
    o.finish(&[])?;
    Ok(Rc::clone(s))
}

/// Endpoint `ai/mcp-federation`.
pub fn federation(v: &Value, path: &str) -> Result<Federation> {
    let mut o = Obj::new(v, path)?;
    let name = o.opt_str("name")?.unwrap_or("tollgate").to_string();
    let info = info(&mut o, name)?;
    let separator = o.opt_str("separator")?.unwrap_or("__").to_string();
    if separator.is_empty() {
        return Err(ConfigError::new(o.at("separator"), "may not be empty"));
    }
    o.finish(&[])?;
    Ok(Federation { info, separator })
}

/// Backend `ai/mcp-upstream`: the upstream server's name (its tools' prefix).
pub fn upstream(v: &Value, path: &str) -> Result<String> {
    let mut o = Obj::new(v, path)?;
    let name = o.str("name")?.to_string();
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(ConfigError::new(
            o.at("name"),
            "use letters, digits, - and _ only",
        ));
    }
    o.finish(&[])?;
    Ok(name)
}

/// Endpoint `ai/mcp-tools`; `id` makes the rate limits' shared-data keys unique.
pub fn policy(v: &Value, path: &str, id: &str) -> Result<Policy> {
    let mut o = Obj::new(v, path)?;
    let mut rules = Vec::new();
    for (i, r) in o.opt_array("rules")?.into_iter().flatten().enumerate() {
        let at = format!("{}[{i}]", o.at("rules"));
        rules.push(rule(r, &at, &format!("{id}.tool{i}"))?);
    }
    let allow_unlisted = o.opt_bool("allow_unlisted")?.unwrap_or(rules.is_empty());
    o.finish(&[])?;
    Ok(Policy {
        rules,
        allow_unlisted,
    })
}

fn rule(v: &Value, path: &str, id: &str) -> Result<Rule> {
    let mut o = Obj::new(v, path)?;
    let tools: Vec<String> = o
        .opt_strings("tools")?
        .unwrap_or_default()
        .iter()
        .map(|s| s.to_string())
        .collect();
    if tools.is_empty() {
        return Err(ConfigError::new(
            o.at("tools"),
            "name at least one tool (a trailing * matches a prefix)",
        ));
    }
    let roles = o
        .opt_strings("roles")?
        .unwrap_or_default()
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut claims = Vec::new();
    if let Some(c) = o.opt_obj("claims")? {
        for (name, want) in c.unread() {
            let values = match want {
                Value::String(s) => vec![s.clone()],
                Value::Array(a) if a.iter().all(Value::is_string) && !a.is_empty() => a
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect(),
                _ => {
                    return Err(ConfigError::new(
                        c.at(name),
                        "expected a string or a list of strings",
                    ))
                }
            };
            claims.push((name.to_string(), values));
        }
    }
    let rate_limit = match o.get("rate_limit") {
        Some(rl) => Some(ratelimit::compile(rl, &o.at("rate_limit"), id)?),
        None => None,
    };
    o.finish(&[])?;
    Ok(Rule {
        tools,
        roles,
        claims,
        rate_limit,
    })
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
