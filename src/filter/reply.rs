//! The gateway's own answers, written to the host in one place ([`reply`]): a [`Refusal`]
//! rendered in the client's front door. The door is chosen by one rule: the endpoint's
//! ([`Endpoint::front_door`]); with no endpoint, Anthropic's for clients that send
//! `anthropic-version` or ask for a `/messages` path, else OpenAI's ([`front_of_request`]).

use crate::config::Endpoint;
use crate::host::Host;
use crate::providers::FrontDoor;
use crate::refusal::{front_property, Refusal, ERROR_HEADER, FRONT_PROPERTY};

/// Answers the client with a refusal in its front door's shape (and status: 529 for
/// Anthropic's `overloaded_error`), marked with [`ERROR_HEADER`].
pub fn reply<H: Host + ?Sized>(h: &mut H, front: FrontDoor, r: &Refusal) {
    let (status, headers, body) = rendered(front, r);
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    h.send_reply(u32::from(status), &headers, &body);
}

/// A refusal as the client gets it: status, headers, body.
pub fn rendered(front: FrontDoor, r: &Refusal) -> (u16, Vec<(&'static str, String)>, Vec<u8>) {
    let (status, body) = r.render(front);
    let mut headers = vec![
        ("content-type", "application/json".to_string()),
        (ERROR_HEADER, "1".to_string()),
    ];
    headers.extend(r.extra_headers());
    (status, headers, body)
}

/// The client's API when no endpoint took the request: Anthropic's SDKs always send
/// `anthropic-version`, and `/messages` is their path.
pub fn front_of_request<H: Host + ?Sized>(h: &H, path: &str) -> FrontDoor {
    if h.request_header("anthropic-version").is_some() || path.ends_with("/messages") {
        FrontDoor::Anthropic
    } else {
        FrontDoor::OpenAi
    }
}

/// Records the client's API for Envoy's replies when the path Envoy will see does not tell
/// it: on LLM endpoints (the path becomes the provider's) and wherever the upstream path ends
/// in `/messages` or the client's does (plain endpoints otherwise skip the hostcall).
pub fn mark_front<H: Host + ?Sized>(h: &mut H, ep: &Endpoint, upstream_path: Option<&str>) {
    let front = ep.front_door();
    let needed = ep.api.is_some()
        || front == FrontDoor::Anthropic
        || upstream_path.is_some_and(|p| p.ends_with("/messages"));
    if needed {
        h.set_property(FRONT_PROPERTY, front_property(front).as_bytes());
    }
}
