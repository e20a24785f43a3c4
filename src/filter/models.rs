//! `GET {prefix}/models` and `GET {prefix}/models/{id}`, answered by the gateway for the
//! LLM endpoints under that prefix (`/v1/chat/completions` → `/v1/models`). Lists model
//! names only (aliases and configured models), never hosts or credentials. Anthropic's
//! SDK (it sends `anthropic-version`) gets Anthropic's list shape.

use crate::config::Gateway;
use crate::host::Host;
use serde_json::{json, Value};

use super::reply::{front_of_request, reply};
use crate::refusal::{ErrorKind, Refusal};

/// Answers a models request if `path` is a models path of some LLM endpoint.
pub fn answer<H: Host>(h: &mut H, gw: &Gateway, path: &str) -> bool {
    let mut list: Vec<(String, &'static str)> = Vec::new();
    let mut single: Option<&str> = None;
    let mut matched = false;
    for ep in gw.endpoints.iter().filter(|e| e.api.is_some()) {
        let Some(id) = under(ep, path) else {
            continue;
        };
        matched = true;
        single = single.or(id);
        for l in ep.backends.iter().filter_map(|b| b.llm.as_ref()) {
            for m in l.public_models() {
                if !list.iter().any(|(x, _)| x == m) {
                    list.push((m.to_string(), l.provider.name()));
                }
            }
        }
    }
    if !matched {
        return false;
    }
    // The list is protected like the models it lists: the client must pass the
    // authentication of the first LLM endpoint under this prefix that has one.
    let guarded = gw.endpoints.iter().enumerate().find(|(_, e)| {
        e.api.is_some()
            && under(e, path).is_some()
            && (e.security.api_keys.is_some() || e.security.jwt.is_some())
    });
    if let Some((index, ep)) = guarded {
        if let Err(refusal) = super::security::authenticate(h, ep, index, None) {
            reply(h, ep.front_door(), &refusal);
            return true;
        }
    }
    let anthropic = h.request_header("anthropic-version").is_some();
    let object = |id: &str, owner: &str| -> Value {
        if anthropic {
            json!({"type": "model", "id": id, "display_name": id, "created_at": "1970-01-01T00:00:00Z"})
        } else {
            json!({"id": id, "object": "model", "created": 0, "owned_by": owner})
        }
    };
    let body = match single {
        Some(id) => match list.iter().find(|(m, _)| m == id) {
            Some((m, owner)) => object(m, owner),
            None => {
                let msg = format!("the model \"{id}\" does not exist");
                let front = front_of_request(h, path);
                reply(h, front, &Refusal::new(ErrorKind::ModelNotFound, msg));
                return true;
            }
        },
        None => {
            let data: Vec<Value> = list.iter().map(|(m, o)| object(m, o)).collect();
            if anthropic {
                json!({"data": data, "has_more": false,
                       "first_id": list.first().map(|m| &m.0), "last_id": list.last().map(|m| &m.0)})
            } else {
                json!({"object": "list", "data": data})
            }
        }
    };
    h.send_reply(
        200,
        &[("content-type", "application/json")],
        body.to_string().as_bytes(),
    );
    true
}

/// Where `path` stands under the models path of `ep` (`{param}` segments of a templated endpoint
/// match any one segment): `Some(None)` for the list, `Some(Some(id))` for one model (an id may
/// hold slashes: `meta-llama/Llama-3`), `None` elsewhere.
fn under<'p>(ep: &crate::config::Endpoint, path: &'p str) -> Option<Option<&'p str>> {
    let models_path = ep.models_path()?;
    let pattern = crate::routing::PathPattern::parse(&models_path).ok()?;
    let depth = models_path.matches('/').count();
    let cut = path
        .match_indices('/')
        .nth(depth)
        .map_or(path.len(), |(i, _)| i);
    let (list, rest) = path.split_at(cut);
    pattern.matches(list)?;
    match rest.strip_prefix('/') {
        None => Some(None),
        Some(id) if !id.is_empty() => Some(Some(id)),
        Some(_) => None,
    }
}
