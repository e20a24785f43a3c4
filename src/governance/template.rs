//! Prompt templates (`ai/prompt-template`) and prompt decorators (`ai/prompt-decorator`).
//!
//! A template is JSON text with placeholders `{{ source.path }}` that builds the request
//! body from the client's request:
//! - `{{ body.messages[0].content }}` or `{{ body.messages.0.content }}`: a value of the
//!   client's JSON body; `{{ body }}` is the whole body;
//! - `{{ header.x-user }}`: a request header as the client sent it (client credential
//!   headers are refused: they never reach a backend);
//! - `{{ param.name }}`: an endpoint `{param}`;
//! - `{{ var.name }}`: a value of the namespace's `variables`.
//!
//! Insertion is JSON-safe: outside a JSON string the placeholder becomes the value's JSON
//! (`"content": {{ body.text }}` gives `"content": "it said \"hi\""`); inside a JSON string
//! it becomes the escaped text (`"content": "Translate: {{ body.text }}"`). A placeholder whose
//! value is missing answers 400 naming it. The template is checked at configure time: it must
//! be valid JSON with every placeholder filled.
//!
//! Decorators add messages to every request of an LLM endpoint after the client's body was
//! parsed: `prepend` before the client's messages, `append` after them.

use crate::config::reader::{ConfigError, Obj, Result};
use crate::providers::model::{ChatRequest, Message, Part, Role};
use crate::routing::Params;
use serde_json::{Map, Value};

/// Client credential headers: a template must not copy them into the upstream body.
const CREDENTIALS: &[&str] = &["authorization", "x-api-key", "api-key", "x-goog-api-key"];

/// Where a placeholder's value comes from.
#[derive(Debug, Clone, PartialEq)]
enum Source {
    Body(Vec<Step>),
    Header(String),
    Param(String),
    Var(Value),
}

#[derive(Debug, Clone, PartialEq)]
enum Step {
    Key(String),
    Index(usize),
}

#[derive(Debug, Clone, PartialEq)]
enum Segment {
    Text(String),
    Value {
        /// The placeholder as written (for errors).
        name: String,
        source: Source,
        /// Inside a JSON string literal of the template.
        in_string: bool,
    },
}

/// A compiled `ai/prompt-template`.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    segments: Vec<Segment>,
}

/// What a template reads at request time.
pub struct Inputs<'a> {
    pub body: &'a Value,
    pub header: &'a dyn Fn(&str) -> Option<String>,
    pub params: &'a Params,
}

/// Reads `ai/prompt-template` (`{template, variables}`).
pub fn compile(v: &Value, path: &str) -> Result<Template> {
    let mut o = Obj::new(v, path)?;
    let text = o.str("template")?;
    let vars = match o.get("variables") {
        None => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(_) => return Err(ConfigError::new(o.at("variables"), "expected an object")),
    };
    let at = o.at("template");
    o.finish(&[])?;
    let t = parse(text, &vars).map_err(|m| ConfigError::new(&at, m))?;
    // Check the shape once with stand-in values: the result must be JSON.
    let probe = t.render_with(&mut |_, _| Ok(Value::String("x".into())));
    match probe {
        Ok(bytes) if serde_json::from_slice::<Value>(&bytes).is_ok() => Ok(t),
        _ => Err(ConfigError::new(
            at,
            "the template does not produce valid JSON (placeholders outside strings stand for whole JSON values)",
        )),
    }
}

fn parse(text: &str, vars: &Map<String, Value>) -> std::result::Result<Template, String> {
    let mut segments = Vec::new();
    let mut rest = text;
    let mut in_string = false;
    while let Some(start) = rest.find("{{") {
        let (lit, after) = rest.split_at(start);
        in_string = scan(lit, in_string);
        segments.push(Segment::Text(lit.to_string()));
        let after = after.get(2..).unwrap_or_default();
        let end = after
            .find("}}")
            .ok_or_else(|| "a placeholder is not closed with }}".to_string())?;
        let name = after.get(..end).unwrap_or_default().trim().to_string();
        let source = source(&name, vars)?;
        segments.push(Segment::Value {
            name,
            source,
            in_string,
        });
        rest = after.get(end + 2..).unwrap_or_default();
    }
    segments.push(Segment::Text(rest.to_string()));
    Ok(Template { segments })
}

/// Whether the text ends inside a JSON string, given whether it started inside one.
fn scan(text: &str, mut in_string: bool) -> bool {
    let mut escaped = false;
    for c in text.chars() {
        if escaped {
            escaped = false;
        } else if in_string && c == '\\' {
            escaped = true;
        } else if c == '"' {
            in_string = !in_string;
        }
    }
    in_string
}

fn source(name: &str, vars: &Map<String, Value>) -> std::result::Result<Source, String> {
    let bad = || {
        format!("{{{{ {name} }}}} is not a placeholder; use body.<path>, header.<name>, param.<name> or var.<name>")
    };
    if name == "body" {
        return Ok(Source::Body(Vec::new()));
    }
    let (kind, rest) = name.split_once('.').ok_or_else(bad)?;
    if rest.is_empty() {
        return Err(bad());
    }
    Ok(match kind {
        "body" => Source::Body(steps(rest).ok_or_else(bad)?),
        "header" if CREDENTIALS.contains(&rest.to_ascii_lowercase().as_str()) => {
            return Err(format!(
                "{{{{ {name} }}}}: client credentials never reach a backend"
            ))
        }
        "header" => Source::Header(rest.to_ascii_lowercase()),
        "param" => Source::Param(rest.to_string()),
        "var" => Source::Var(
            vars.get(rest)
                .cloned()
                .ok_or_else(|| format!("{{{{ {name} }}}}: no variable \"{rest}\" in variables"))?,
        ),
        _ => return Err(bad()),
    })
}

/// `messages[0].content` / `messages.0.content` → steps.
fn steps(path: &str) -> Option<Vec<Step>> {
    let mut out = Vec::new();
    for part in path.split('.') {
        let (key, mut idx) = match part.find('[') {
            Some(i) => (part.get(..i)?, part.get(i..)?),
            None => (part, ""),
        };
        if key.is_empty() && idx.is_empty() {
            return None;
        }
        if !key.is_empty() {
            out.push(match key.parse::<usize>() {
                Ok(n) => Step::Index(n),
                Err(_) => Step::Key(key.to_string()),
            });
        }
        while !idx.is_empty() {
            let close = idx.find(']')?;
            let n = idx.get(1..close)?.parse().ok()?;
            out.push(Step::Index(n));
            idx = idx.get(close + 1..)?;
        }
    }
    Some(out)
}

impl Template {
    /// The request headers the template reads.
    pub fn header_names(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().filter_map(|s| match s {
            Segment::Value {
                source: Source::Header(h),
                ..
            } => Some(h.as_str()),
            _ => None,
        })
    }

    /// Renders the body; Err names the missing placeholder.
    pub fn render(&self, inputs: &Inputs<'_>) -> std::result::Result<Vec<u8>, String> {
        self.render_with(&mut |name, source| {
            let missing =
                || format!("the template value {{{{ {name} }}}} is missing in the request");
            match source {
                Source::Body(steps) => {
                    let mut v = inputs.body;
                    for s in steps {
                        v = match s {
                            Step::Key(k) => v.get(k.as_str()),
                            Step::Index(i) => match v {
                                Value::Array(a) => a.get(*i),
                                other => other.get(i.to_string()),
                            },
                        }
                        .ok_or_else(missing)?;
                    }
                    Ok(v.clone())
                }
                Source::Header(h) => (inputs.header)(h).map(Value::String).ok_or_else(missing),
                Source::Param(p) => inputs
                    .params
                    .iter()
                    .find(|(k, _)| k == p)
                    .map(|(_, v)| Value::String(v.clone()))
                    .ok_or_else(missing),
                Source::Var(v) => Ok(v.clone()),
            }
        })
    }

    fn render_with(
        &self,
        value: &mut dyn FnMut(&str, &Source) -> std::result::Result<Value, String>,
    ) -> std::result::Result<Vec<u8>, String> {
        let mut out = String::new();
        for seg in &self.segments {
            match seg {
                Segment::Text(t) => out.push_str(t),
                Segment::Value {
                    name,
                    source,
                    in_string,
                } => {
                    let v = value(name, source)?;
                    if *in_string {
                        let text = match v {
                            Value::String(s) => s,
                            other => other.to_string(),
                        };
                        let quoted = Value::String(text).to_string();
                        out.push_str(quoted.get(1..quoted.len() - 1).unwrap_or_default());
                    } else {
                        out.push_str(&v.to_string());
                    }
                }
            }
        }
        Ok(out.into_bytes())
    }
}

/// A compiled `ai/prompt-decorator`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Decorator {
    pub prepend: Vec<(Role, String)>,
    pub append: Vec<(Role, String)>,
}

/// Reads `ai/prompt-decorator` (`{prepend: [{role, content}], append: [...]}`).
pub fn compile_decorator(v: &Value, path: &str) -> Result<Decorator> {
    let mut o = Obj::new(v, path)?;
    let mut d = Decorator::default();
    for (key, list) in [("prepend", &mut d.prepend), ("append", &mut d.append)] {
        let Some(items) = o.opt_array(key)? else {
            continue;
        };
        for (i, item) in items.iter().enumerate() {
            let mut m = Obj::new(item, &format!("{}[{i}]", o.at(key)))?;
            let role = match m.str("role")? {
                "system" => Role::System,
                "user" => Role::User,
                "assistant" => Role::Assistant,
                other => {
                    return Err(ConfigError::new(
                        m.at("role"),
                        format!("\"{other}\" is not one of system, user, assistant"),
                    ))
                }
            };
            let content = m.str("content")?.to_string();
            m.finish(&[])?;
            list.push((role, content));
        }
    }
    o.finish(&[])?;
    if d.prepend.is_empty() && d.append.is_empty() {
        return Err(ConfigError::new(
            path,
            "set prepend or append (lists of {role, content})",
        ));
    }
    Ok(d)
}

impl Decorator {
    /// Adds the configured messages around the client's.
    pub fn apply(&self, req: &mut ChatRequest) {
        let msg = |(role, text): &(Role, String)| Message {
            role: *role,
            content: vec![Part::Text(text.clone())],
            tool_calls: Vec::new(),
            tool_call_id: None,
            name: None,
        };
        let mut messages: Vec<Message> = self.prepend.iter().map(msg).collect();
        messages.append(&mut req.messages);
        messages.extend(self.append.iter().map(msg));
        req.messages = messages;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use serde_json::json;

    fn render(t: &Template, body: Value, headers: &[(&str, &str)], params: &Params) -> Result2 {
        let hs: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let get = move |n: &str| hs.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        t.render(&Inputs {
            body: &body,
            header: &get,
            params,
        })
        .map(|b| serde_json::from_slice(&b).unwrap())
    }
    type Result2 = std::result::Result<Value, String>;

    #[test]
    fn renders_values_json_escaped_inside_and_outside_strings() {
        let t = compile(
            &json!({"template": r#"{"model": {{ var.model }}, "messages": [
                {"role": "system", "content": "You answer as {{ header.X-Persona }} for tenant {{ param.tenant }}."},
                {"role": "user", "content": {{ body.question }}},
                {"role": "user", "content": "n={{ body.opts.n }} first={{ body.items[0] }} \"q\"={{body.items.1}}"}],
              "metadata": {{ body.opts }}}"#,
                "variables": {"model": "gpt-4o-mini"}}),
            "$.t",
        )
        .unwrap();
        let params = vec![("tenant".to_string(), "acme".to_string())];
        let got = render(
            &t,
            json!({"question": "say \"hi\"\n{{ body.x }}", "opts": {"n": 2}, "items": ["a\"", {"k": 1}]}),
            &[("x-persona", "a pirate")],
            &params,
        )
        .unwrap();
        assert_eq!(
            got,
            json!({"model": "gpt-4o-mini", "messages": [
                {"role": "system", "content": "You answer as a pirate for tenant acme."},
                {"role": "user", "content": "say \"hi\"\n{{ body.x }}"},
                {"role": "user", "content": "n=2 first=a\" \"q\"={\"k\":1}"}],
             "metadata": {"n": 2}})
        );
        let e = render(&t, json!({"question": "q"}), &[("x-persona", "p")], &params).unwrap_err();
        assert_eq!(
            e,
            "the template value {{ body.opts.n }} is missing in the request"
        );
    }

    #[test]
    fn configure_errors() {
        let cases = [
            (json!({"template": "{\"a\": {{ body.x }"}), "$.t.template: a placeholder is not closed with }}"),
            (json!({"template": "{\"a\": {{ cookie.x }}}"}), "$.t.template: {{ cookie.x }} is not a placeholder; use body.<path>, header.<name>, param.<name> or var.<name>"),
            (json!({"template": "{\"a\": {{ var.m }}}"}), "$.t.template: {{ var.m }}: no variable \"m\" in variables"),
            (json!({"template": "{\"a\": {{ body.x }} {{ body.y }}}"}), "$.t.template: the template does not produce valid JSON (placeholders outside strings stand for whole JSON values)"),
            (json!({"template": "{}", "vars": {}}), "$.t.vars: unknown field"),
            (json!({"template": "{\"k\": {{ header.Authorization }}}"}), "$.t.template: {{ header.Authorization }}: client credentials never reach a backend"),
        ];
        for (v, want) in cases {
            assert_eq!(compile(&v, "$.t").unwrap_err().to_string(), want);
        }
    }

    #[test]
    fn decorator_wraps_the_messages() {
        let d = compile_decorator(
            &json!({"prepend": [{"role": "system", "content": "Be brief."}], "append": [{"role": "user", "content": "Answer in French."}]}),
            "$.d",
        )
        .unwrap();
        let mut req = ChatRequest::default();
        req.messages.push(Message {
            role: Role::User,
            content: vec![Part::Text("hi".into())],
            tool_calls: vec![],
            tool_call_id: None,
            name: None,
        });
        d.apply(&mut req);
        let roles: Vec<Role> = req.messages.iter().map(|m| m.role).collect();
        assert_eq!(roles, vec![Role::System, Role::User, Role::User]);
        assert_eq!(
            req.messages[2].content,
            vec![Part::Text("Answer in French.".into())]
        );
        assert_eq!(
            compile_decorator(
                &json!({"prepend": [{"role": "tool", "content": "x"}]}),
                "$.d"
            )
            .unwrap_err()
            .to_string(),
            "$.d.prepend[0].role: \"tool\" is not one of system, user, assistant"
        );
        assert_eq!(
            compile_decorator(&json!({}), "$.d")
                .unwrap_err()
                .to_string(),
            "$.d: set prepend or append (lists of {role, content})"
        );
    }
}
