//! Where text reaches the provider: the one list of a request's texts that the prompt guard
//! and PII masking walk, each as the provider will receive it, and the edit splicing that
//! lets a value found across several parts be replaced in place.
//!
//! In scope, every text the model reads:
//! - message content: the text parts of one message, joined without a separator (the
//!   model reads adjacent parts as one text, so `["mail bob@exa", "mple.com"]` is one
//!   address); tool results are messages of role `tool` (Anthropic `tool_result` blocks
//!   arrive as such). Two messages are two units: joining them would misread the boundary
//!   (`bob@example.com` + `Thanks` is not the address `bob@example.comThanks`), and each
//!   is a turn of its own to the provider;
//! - each message's `name`;
//! - the arguments of assistant tool calls (Anthropic `tool_use.input` arrives as such):
//!   every string and number of the JSON, decoded (`\u0040` is `@` to the model); text that
//!   is not JSON is taken as it is;
//! - tool descriptions and every string and number of their parameter schemas;
//! - `response_format` (its JSON schema), stop sequences, `user`, and the fields passed
//!   through to OpenAI-compatible providers.
//!
//! Not text to scan: images (URLs and inline data are fetched or decoded, not read as
//! text; masking would break them), tool and function names and call ids (identifiers the
//! provider validates and matches), the model name, and JSON object keys (property names).

use crate::providers::model::{ChatRequest, DocSource, Document, Message, Part};
use serde_json::Value;

/// A replacement in a joined text: bytes `start..end` become `with`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edit {
    pub start: usize,
    pub end: usize,
    pub with: String,
}

/// The texts of `parts` as one string.
pub fn joined(parts: &[&mut String]) -> String {
    let mut out = String::with_capacity(parts.iter().map(|p| p.len()).sum());
    for p in parts {
        out.push_str(p);
    }
    out
}

/// Applies edits made on [`joined`]`(parts)` to the parts themselves: each replacement goes
/// into the part where its match starts; the rest of the match is cut from the parts it
/// reaches into. Edits must be sorted and non-overlapping, on character boundaries.
pub fn splice(parts: &mut [&mut String], edits: &[Edit]) {
    let mut offsets = Vec::with_capacity(parts.len());
    let mut at = 0usize;
    for p in parts.iter() {
        offsets.push(at);
        at = at.saturating_add(p.len());
    }
    // Back to front: an edit changes only its own parts from its start on, so the offsets
    // of everything before it stay valid.
    for e in edits.iter().rev() {
        for (i, part) in parts.iter_mut().enumerate() {
            let start = offsets.get(i).copied().unwrap_or(0);
            let end = start.saturating_add(part.len());
            if end <= e.start || start >= e.end {
                continue;
            }
            let from = e.start.max(start) - start;
            let to = e.end.min(end) - start;
            if !part.is_char_boundary(from) || !part.is_char_boundary(to) {
                continue;
            }
            let with = if e.start >= start {
                e.with.as_str()
            } else {
                ""
            };
            part.replace_range(from..to, with);
        }
    }
}

/// The texts of a message list the provider reads as prompt text, in order: text parts and
/// plain-text documents (images, binary documents and reasoning skipped: reasoning is the
/// model's earlier output, signed as written).
fn text_parts(messages: &mut [Message]) -> Vec<&mut String> {
    messages
        .iter_mut()
        .flat_map(|m| m.content.iter_mut())
        .filter_map(text_of_part)
        .collect()
}

fn text_of_part(p: &mut Part) -> Option<&mut String> {
    match p {
        Part::Text(t)
        | Part::Document(Document {
            source: DocSource::Text(t),
            ..
        }) => Some(t),
        _ => None,
    }
}

/// Calls `f` on the text parts of a run of messages (or of one message), then drops the
/// text parts `f` emptied (a value spanning parts leaves the later ones empty; providers
/// refuse empty text blocks).
pub fn content<E>(
    messages: &mut [Message],
    f: &mut dyn FnMut(&mut [&mut String]) -> Result<(), E>,
) -> Result<(), E> {
    let mut parts = text_parts(messages);
    if parts.is_empty() {
        return Ok(());
    }
    let had_text: Vec<bool> = parts.iter().map(|p| !p.is_empty()).collect();
    f(&mut parts)?;
    let emptied: Vec<bool> = parts
        .iter()
        .zip(&had_text)
        .map(|(p, had)| *had && p.is_empty())
        .collect();
    drop(parts);
    if !emptied.contains(&true) {
        return Ok(());
    }
    let mut i = 0;
    for m in messages.iter_mut() {
        m.content.retain(|p| {
            if p.prompt_text().is_none() {
                return true;
            }
            let keep = !emptied.get(i).copied().unwrap_or(false);
            i += 1;
            keep
        });
    }
    Ok(())
}

/// Calls `f` on every string and number of a JSON value (a number `f` changes becomes a
/// string). Object keys are left alone.
pub fn json<E>(
    v: &mut Value,
    f: &mut dyn FnMut(&mut [&mut String]) -> Result<(), E>,
) -> Result<(), E> {
    match v {
        Value::String(s) => f(&mut [s]),
        Value::Number(n) => {
            let before = n.to_string();
            let mut s = before.clone();
            f(&mut [&mut s])?;
            if s != before {
                *v = Value::String(s);
            }
            Ok(())
        }
        Value::Array(items) => items.iter_mut().try_for_each(|x| json(x, f)),
        Value::Object(map) => map.values_mut().try_for_each(|x| json(x, f)),
        Value::Bool(_) | Value::Null => Ok(()),
    }
}

/// A JSON text (tool-call arguments): its strings and numbers, decoded; rewritten only
/// when `f` changed one (the provider otherwise gets the client's bytes). Not JSON: the
/// text itself.
fn json_text<E>(
    text: &mut String,
    f: &mut dyn FnMut(&mut [&mut String]) -> Result<(), E>,
) -> Result<(), E> {
    let Ok(mut v) = serde_json::from_str::<Value>(text) else {
        return f(&mut [text]);
    };
    let mut changed = false;
    json(&mut v, &mut |parts: &mut [&mut String]| {
        let before = joined(parts);
        f(parts)?;
        changed |= joined(parts) != before;
        Ok(())
    })?;
    if changed {
        *text = v.to_string();
    }
    Ok(())
}

/// Calls `f` on every text of the request that reaches the provider (see the module doc),
/// each unit as the provider receives it: a message's parts, or one field.
pub fn visit<E>(
    req: &mut ChatRequest,
    f: &mut dyn FnMut(&mut [&mut String]) -> Result<(), E>,
) -> Result<(), E> {
    for m in &mut req.messages {
        content(std::slice::from_mut(m), f)?;
        if let Some(name) = m.name.as_mut() {
            f(&mut [name])?;
        }
        for call in &mut m.tool_calls {
            json_text(&mut call.arguments, f)?;
        }
    }
    for tool in &mut req.tools {
        if let Some(d) = tool.description.as_mut() {
            f(&mut [d])?;
        }
        json(&mut tool.parameters, f)?;
    }
    if let Some(rf) = req.response_format.as_mut() {
        json(rf, f)?;
    }
    for s in &mut req.stop {
        f(&mut [s])?;
    }
    if let Some(u) = req.user.as_mut() {
        f(&mut [u])?;
    }
    req.extra.values_mut().try_for_each(|v| json(v, f))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::providers::model::{Role, Tool, ToolCall};
    use serde_json::json;

    fn msg(role: Role, parts: &[&str]) -> Message {
        Message {
            role,
            content: parts.iter().map(|t| Part::Text(t.to_string())).collect(),
            tool_calls: vec![],
            tool_call_id: None,
            name: None,
        }
    }

    /// Every unit `visit` hands out, joined.
    fn units(req: &mut ChatRequest) -> Vec<String> {
        let mut out = Vec::new();
        visit::<()>(req, &mut |parts| {
            out.push(joined(parts));
            Ok(())
        })
        .unwrap();
        out
    }

    #[test]
    fn splice_spreads_edits_over_the_parts_they_span() {
        let mut a = "mail bob@exa".to_string();
        let mut b = "mple.com and".to_string();
        let mut c = " x@y.org!".to_string();
        let mut parts = [&mut a, &mut b, &mut c];
        let text = joined(&parts);
        let at = |s: &str| text.find(s).unwrap();
        splice(
            &mut parts,
            &[
                Edit {
                    start: at("bob"),
                    end: at(" and"),
                    with: "[EMAIL_1]".into(),
                },
                Edit {
                    start: at("x@"),
                    end: at("!"),
                    with: "[EMAIL_2]".into(),
                },
            ],
        );
        assert_eq!(
            (a.as_str(), b.as_str(), c.as_str()),
            ("mail [EMAIL_1]", " and", " [EMAIL_2]!")
        );
        // A match covering a whole middle part empties it.
        let (mut a, mut b, mut c) = ("ab".to_string(), "cd".to_string(), "ef".to_string());
        let mut parts = [&mut a, &mut b, &mut c];
        let e = Edit {
            start: 1,
            end: 5,
            with: "#".into(),
        };
        splice(&mut parts, &[e]);
        assert_eq!((a.as_str(), b.as_str(), c.as_str()), ("a#", "", "f"));
    }

    #[test]
    fn units_are_each_message_parts_joined_and_every_other_text_field() {
        let mut req = ChatRequest {
            messages: vec![
                msg(Role::System, &["be ", "nice"]),
                msg(Role::User, &["mail bob@exa", "mple.com"]),
                msg(Role::User, &["Thanks"]),
                Message {
                    name: Some("alice".into()),
                    tool_calls: vec![ToolCall {
                        id: "c1".into(),
                        name: "send".into(),
                        arguments: r#"{"to":"bob\u0040example.com","n":4111111111111111}"#.into(),
                    }],
                    ..msg(Role::Assistant, &[])
                },
                msg(Role::Tool, &["sent to ", "bob@example.com"]),
            ],
            tools: vec![Tool {
                name: "send".into(),
                description: Some("send mail".into()),
                parameters: json!({"type": "object", "properties": {"to": {"description": "address"}}}),
                ..Default::default()
            }],
            stop: vec!["END".into()],
            user: Some("u@x.io".into()),
            ..Default::default()
        };
        req.extra
            .insert("prediction".into(), json!({"content": "draft"}));
        // (JSON object order depends on serde_json's features: compared as a set.)
        let mut got = units(&mut req);
        got.sort();
        let mut want = [
            "be nice",
            "mail bob@example.com",
            "Thanks",
            "alice",
            "bob@example.com",
            "4111111111111111",
            "sent to bob@example.com",
            "send mail",
            "address",
            "object",
            "END",
            "u@x.io",
            "draft",
        ];
        want.sort();
        assert_eq!(got, want);
    }

    #[test]
    fn edits_reach_every_field_and_spent_parts_are_dropped() {
        let mut req = ChatRequest {
            messages: vec![
                msg(Role::User, &["mail bob@exa", "mple.com now"]),
                Message {
                    tool_calls: vec![ToolCall {
                        id: "c1".into(),
                        name: "send".into(),
                        arguments: r#"{"to": "bob\u0040example.com", "keep": "as is"}"#.into(),
                    }],
                    ..msg(Role::Assistant, &["ok"])
                },
                msg(Role::User, &["x", "bob@", "example.com"]),
            ],
            ..Default::default()
        };
        let untouched = r#"{"b": 1,  "a": "no pii"}"#;
        req.messages[1].tool_calls.push(ToolCall {
            id: "c2".into(),
            name: "f".into(),
            arguments: untouched.into(),
        });
        let email = "bob@example.com";
        visit::<()>(&mut req, &mut |parts| {
            let text = joined(parts);
            let edits: Vec<Edit> = text
                .match_indices(email)
                .map(|(i, _)| Edit {
                    start: i,
                    end: i + email.len(),
                    with: "[EMAIL_1]".into(),
                })
                .collect();
            splice(parts, &edits);
            Ok(())
        })
        .unwrap();
        let texts = |m: &Message| -> Vec<String> {
            m.content
                .iter()
                .map(|p| match p {
                    Part::Text(t) => t.clone(),
                    _ => "<img>".into(),
                })
                .collect()
        };
        assert_eq!(texts(&req.messages[0]), ["mail [EMAIL_1]", " now"]);
        assert_eq!(texts(&req.messages[2]), ["x", "[EMAIL_1]"]);
        let args: Value = serde_json::from_str(&req.messages[1].tool_calls[0].arguments).unwrap();
        assert_eq!(args, json!({"to": "[EMAIL_1]", "keep": "as is"}));
        // Arguments without a finding keep the client's exact bytes.
        assert_eq!(req.messages[1].tool_calls[1].arguments, untouched);
    }

    #[test]
    fn numbers_become_strings_only_when_changed() {
        let mut v = json!({"card": 4111111111111111u64, "n": 3, "list": [1.5, "x"]});
        json::<()>(&mut v, &mut |parts| {
            for p in parts.iter_mut() {
                if p.as_str() == "4111111111111111" {
                    **p = "[CREDIT_CARD_1]".into();
                }
            }
            Ok(())
        })
        .unwrap();
        assert_eq!(
            v,
            json!({"card": "[CREDIT_CARD_1]", "n": 3, "list": [1.5, "x"]})
        );
    }
}
