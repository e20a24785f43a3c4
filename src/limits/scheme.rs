//! The descriptor scheme: how one quota check or charge and one rate-limit check are written
//! as descriptors of Envoy's rate limit protocol (`envoy.service.ratelimit.v3`), so that the
//! filter (sender) and `tollgate limits` (receiver) agree, and so that envoyproxy/ratelimit or
//! Limitador can serve the same descriptors from the configuration `tollgate limits
//! --print-config` writes. Pure code, compiled for the .wasm too.
//!
//! Every request uses the domain [`DOMAIN`]. Descriptor entries, in this order:
//!
//! | what | entries |
//! |---|---|
//! | one limit of a quota rule | `quota`=name, `rule`=rule name, `unit`=`second`…`year`, `identity`=caller |
//! | a rate limit's all-clients bucket (`max_rate`) | `ratelimit`=scope |
//! | a client's request bucket (`client_max_rate`) | `ratelimit`=scope, `client`=caller |
//! | a client's token balance (`client_max_tokens`) | `ratelimit`=scope, `client_tokens`=caller |
//!
//! A quota check or charge sends one descriptor per limit of the rule (a rule with 1000/hour
//! and 5000/day sends two), each with the same `hits_addend`. The scope of
//! `qos/ratelimit/router/redis` is the endpoint, `"<METHOD> <endpoint path>"` ([`endpoint_scope`]);
//! that of the service-level `qos/ratelimit/service/redis` is [`SERVICE_SCOPE`]. The identity is the
//! caller as the local store keys it today (`cost::resolve`: hashed as `key-<16 hex>` for
//! credential headers and under `hash_keys`); an absent identity is the empty string (one
//! anonymous caller).
//!
//! What an operation is, per descriptor: its `hits_addend` (the per-descriptor value, else the
//! request's, 0 meaning 1 as the protocol says), `is_negative_hits` (Envoy 1.38+: give back),
//! and the request's gRPC metadata [`OP`]:
//! - hits 0: a check, nothing written (a quota limit passes while not spent; a token balance
//!   while above 0);
//! - `reserve` (the default): take the hits only if every descriptor of the request fits,
//!   else take nothing and answer `OVER_LIMIT` (a reservation; a request-rate check);
//! - `charge`: take the hits whatever the balance (the call happened; a token charge);
//! - `is_negative_hits`: give the hits back (settling a reservation for less), never refused;
//! - `release`, with the [`ID`] of a `reserve` and that reserve's descriptors: give back what
//!   that reserve took, if it was applied, and make it take nothing if it comes later (a
//!   reserve whose answer the gateway never had: timed out, lost, the client gone). See
//!   docs/limits.md, "Reservations whose answer is lost".
//!
//! [`ID`] names the operation: the service applies an (op, id) once and answers a retry with
//! the first answer. [`AT`] (unix seconds) applies the operation to the windows that were
//! current then: a settlement goes to the windows its reservation went to.

use crate::support::calendar::Unit;

/// The rate limit domain of every request.
pub const DOMAIN: &str = "tollgate";
/// gRPC metadata: `reserve` (default), `charge` or `release`.
pub const OP: &str = "x-tollgate-op";
/// gRPC metadata: the operation's id, for exactly-once application on retries.
pub const ID: &str = "x-tollgate-id";
/// gRPC metadata: unix seconds whose windows the operation applies to (default: now).
pub const AT: &str = "x-tollgate-at";
/// Longest accepted [`ID`].
pub const MAX_ID: usize = 128;
/// The scope of `qos/ratelimit/service/redis`.
pub const SERVICE_SCOPE: &str = "service";

/// What positive hits do (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Op {
    /// All-or-nothing: take the hits only when every descriptor fits.
    #[default]
    Reserve,
    /// Take the hits unconditionally.
    Charge,
    /// Undo the `reserve` of the same id, whether it was applied or comes later.
    Release,
}

impl Op {
    pub fn name(self) -> &'static str {
        match self {
            Op::Reserve => "reserve",
            Op::Charge => "charge",
            Op::Release => "release",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "reserve" => Some(Op::Reserve),
            "charge" => Some(Op::Charge),
            "release" => Some(Op::Release),
            _ => None,
        }
    }
}

/// Descriptor entries as (key, value) pairs.
pub type Entries = Vec<(String, String)>;

/// Which bucket of a rate limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bucket {
    /// `max_rate`: all clients together.
    Endpoint,
    /// `client_max_rate`: one client's requests.
    Client(String),
    /// `client_max_tokens`: one client's LLM token balance.
    Tokens(String),
}

/// What one descriptor counts against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Quota {
        quota: String,
        rule: String,
        unit: Unit,
        identity: String,
    },
    RateLimit {
        scope: String,
        bucket: Bucket,
    },
}

impl Target {
    /// The descriptor entries of this target.
    pub fn entries(&self) -> Entries {
        let e = |k: &str, v: &str| (k.to_string(), v.to_string());
        match self {
            Target::Quota {
                quota,
                rule,
                unit,
                identity,
            } => vec![
                e("quota", quota),
                e("rule", rule),
                e("unit", unit.name()),
                e("identity", identity),
            ],
            Target::RateLimit { scope, bucket } => {
                let mut out = vec![e("ratelimit", scope)];
                match bucket {
                    Bucket::Endpoint => {}
                    Bucket::Client(id) => out.push(e("client", id)),
                    Bucket::Tokens(id) => out.push(e("client_tokens", id)),
                }
                out
            }
        }
    }

    /// Reads descriptor entries written by [`Target::entries`].
    pub fn parse(entries: &[(&str, &str)]) -> Result<Self, String> {
        match entries {
            [("quota", quota), ("rule", rule), ("unit", unit), ("identity", identity)] => {
                let unit = Unit::parse(unit)
                    .ok_or_else(|| format!("unit \"{unit}\" is not one of second, minute, hour, day, week, month, year"))?;
                Ok(Target::Quota {
                    quota: quota.to_string(),
                    rule: rule.to_string(),
                    unit,
                    identity: identity.to_string(),
                })
            }
            [("ratelimit", scope), rest @ ..] => {
                let bucket = match rest {
                    [] => Bucket::Endpoint,
                    [("client", id)] => Bucket::Client(id.to_string()),
                    [("client_tokens", id)] => Bucket::Tokens(id.to_string()),
                    _ => return Err(not_tollgate(entries)),
                };
                Ok(Target::RateLimit {
                    scope: scope.to_string(),
                    bucket,
                })
            }
            _ => Err(not_tollgate(entries)),
        }
    }
}

fn not_tollgate(entries: &[(&str, &str)]) -> String {
    let keys: Vec<&str> = entries.iter().map(|(k, _)| *k).collect();
    format!(
        "descriptor [{}] is not one of tollgate's: [quota, rule, unit, identity], [ratelimit], [ratelimit, client], [ratelimit, client_tokens]",
        keys.join(", ")
    )
}

/// The scope of an endpoint's `qos/ratelimit/router/redis`: `POST /v1/chat/completions`.
pub fn endpoint_scope(method: &str, path: &str) -> String {
    format!("{method} {path}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(e: &Entries) -> Result<Target, String> {
        let pairs: Vec<(&str, &str)> = e.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        Target::parse(&pairs)
    }

    #[test]
    fn entries_round_trip() {
        let targets = [
            Target::Quota {
                quota: "llm".into(),
                rule: "gold".into(),
                unit: Unit::Month,
                identity: "key-0123456789abcdef".into(),
            },
            Target::RateLimit {
                scope: endpoint_scope("POST", "/v1/chat/completions"),
                bucket: Bucket::Endpoint,
            },
            Target::RateLimit {
                scope: SERVICE_SCOPE.into(),
                bucket: Bucket::Client(String::new()),
            },
            Target::RateLimit {
                scope: "GET /x".into(),
                bucket: Bucket::Tokens("t1".into()),
            },
        ];
        for t in targets {
            assert_eq!(parse(&t.entries()), Ok(t));
        }
    }

    #[test]
    fn foreign_descriptors_are_named() {
        let e = vec![("generic_key".to_string(), "x".to_string())];
        assert!(parse(&e)
            .unwrap_err()
            .contains("[generic_key] is not one of tollgate's"));
        let e = Target::Quota {
            quota: "q".into(),
            rule: "r".into(),
            unit: Unit::Day,
            identity: "i".into(),
        }
        .entries();
        let mut bad = e.clone();
        bad[2].1 = "fortnight".into();
        assert!(parse(&bad).unwrap_err().contains("\"fortnight\""));
        assert!(parse(&e[..3].to_vec()).is_err());
        let extra = vec![
            ("ratelimit".to_string(), "s".to_string()),
            ("client".to_string(), "a".to_string()),
            ("x".to_string(), "b".to_string()),
        ];
        assert!(parse(&extra).is_err());
    }

    #[test]
    fn ops_parse() {
        assert_eq!(Op::parse("charge"), Some(Op::Charge));
        assert_eq!(Op::parse(Op::Reserve.name()), Some(Op::Reserve));
        assert_eq!(Op::parse("release"), Some(Op::Release));
        assert_eq!(Op::parse("refund"), None);
    }
}
