//! The filter's side of [`crate::security`]: authenticate on the request headers, guard
//! and mask the parsed request, and scan (and restore) the answer, buffered or streamed.
//! Kept apart from the pipeline so the wire-in points stay one call each.

use super::errors::{self, ErrorKind, GatewayError};
use crate::config::security::EndpointSecurity;
use crate::config::Endpoint;
use crate::host::Host;
use crate::providers::model::{ChatRequest, ChatResponse, Part, ProviderError, Role, StreamEvent};
use crate::security::apikeys::AuthError;
use crate::security::claims::{ClaimsError, PAYLOAD_HEADER};
use crate::security::exfil::{Blocked, Exfil, Scanner};
use crate::security::guard::{GuardError, PromptGuard};
use crate::security::pii::{Masking, Pii, PiiAction, Restorer};
use std::rc::Rc;

/// An authenticated (or public) request.
pub struct Auth {
    /// Roles from the API key and the JWT.
    pub roles: Vec<String>,
    /// The query to send upstream (the client key removed with the query-string strategy).
    pub query: Option<String>,
}

/// Answers with a gateway error in the endpoint's API shape.
pub fn reply<H: Host>(h: &mut H, ep: &Endpoint, kind: ErrorKind, message: &str) {
    let extra: &[(&str, &str)] = if kind == ErrorKind::Unauthorized {
        &[("www-authenticate", "Bearer")]
    } else {
        &[]
    };
    errors::reply_error(
        h,
        errors::front(ep),
        GatewayError::new(kind, message),
        extra,
    );
}

/// Request headers: `auth/api-keys` and `auth/validator`. `Err` after answering 401/403.
pub fn authenticate<H: Host>(h: &mut H, ep: &Endpoint, query: Option<&str>) -> Result<Auth, ()> {
    let sec = &ep.security;
    let mut auth = Auth {
        roles: Vec::new(),
        query: query.map(str::to_string),
    };
    if let Some(rule) = &sec.api_keys {
        let header = |n: &str| h.request_header(n);
        match rule.authenticate(&header, query) {
            Ok(grant) => {
                auth.roles = grant.roles;
                if rule.strategy == crate::security::apikeys::Strategy::QueryString {
                    auth.query = grant.query;
                }
                if let Some((name, role)) = grant.role_header {
                    h.set_request_header(&name.to_ascii_lowercase(), Some(&role));
                }
            }
            Err(e) => {
                let kind = match e {
                    AuthError::Missing | AuthError::Unknown => ErrorKind::Unauthorized,
                    AuthError::Forbidden => ErrorKind::Forbidden,
                };
                reply(h, ep, kind, e.message());
                return Err(());
            }
        }
    }
    if let Some(rule) = &sec.jwt {
        match rule.check(h.request_header(PAYLOAD_HEADER).as_deref()) {
            Ok(roles) => auth.roles.extend(roles),
            Err(e) => {
                let kind = match e {
                    ClaimsError::Missing | ClaimsError::Invalid => ErrorKind::Unauthorized,
                    ClaimsError::Forbidden(_) => ErrorKind::Forbidden,
                };
                reply(h, ep, kind, e.message());
                return Err(());
            }
        }
    }
    // The verified claims are for the gateway, not for the provider.
    h.set_request_header(PAYLOAD_HEADER, None);
    Ok(auth)
}

/// Stream state of one choice.
#[derive(Default)]
struct ChoiceText {
    scanner: Scanner,
    restorer: Restorer,
}

/// Security state of one LLM call.
#[derive(Default)]
pub struct CallSecurity {
    roles: Vec<String>,
    pii: Option<Rc<Pii>>,
    exfil: Option<Rc<Exfil>>,
    guard: Option<Rc<PromptGuard>>,
    masking: Masking,
    choices: Vec<(u32, ChoiceText)>,
    /// Streamed refusal text per choice: its own window (it is sent apart from the content).
    refusals: Vec<(u32, ChoiceText)>,
    /// Streamed tool-call arguments, per (choice, call): the same exfiltration window.
    calls: Vec<((u32, u32), Scanner)>,
    /// The stream was stopped: everything after is dropped.
    blocked: bool,
}

impl CallSecurity {
    pub fn new(sec: &EndpointSecurity, roles: Vec<String>) -> Self {
        Self {
            roles,
            pii: sec.pii.clone(),
            exfil: sec.exfil.clone(),
            guard: sec.guard.clone(),
            ..Self::default()
        }
    }

    /// The parsed request, before translation: prompt guard, then PII masking.
    /// `models`: the model as the client named it and as the provider calls it.
    pub fn on_request(
        &mut self,
        req: &mut ChatRequest,
        models: &[&str],
    ) -> Result<(), (ErrorKind, String)> {
        if let Some(g) = &self.guard {
            let mut texts: Vec<&str> = Vec::new();
            let mut user: Vec<&str> = Vec::new();
            for m in &req.messages {
                for p in &m.content {
                    if let Part::Text(t) = p {
                        texts.push(t);
                        if m.role == Role::User {
                            user.push(t);
                        }
                    }
                }
            }
            if let Err(e) = g.check(&texts, &user, models, &self.roles) {
                let kind = match e {
                    GuardError::ModelForbidden(_) => ErrorKind::Forbidden,
                    _ => ErrorKind::Blocked,
                };
                return Err((kind, e.message()));
            }
        }
        if let Some(pii) = &self.pii {
            if pii.action == PiiAction::Mask {
                // No placeholder given out may be text the client wrote in any message.
                for m in &req.messages {
                    for p in &m.content {
                        if let Part::Text(t) = p {
                            self.masking.reserve(t);
                        }
                    }
                }
            }
            for m in &mut req.messages {
                for p in &mut m.content {
                    if let Part::Text(t) = p {
                        match self.masking.apply(pii, t) {
                            Ok(Some(masked)) => *t = masked,
                            Ok(None) => {}
                            Err(labels) => {
                                let msg = format!(
                                    "the request was blocked by the gateway: it contains personal data ({})",
                                    labels.join(", ")
                                );
                                return Err((ErrorKind::Blocked, msg));
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn restoring(&self) -> bool {
        self.pii.as_ref().is_some_and(|p| p.restore) && !self.masking.pairs.is_empty()
    }

    /// A whole answer: exfiltration guard, then placeholder restore. `Err`: stopped.
    pub fn on_response(&mut self, resp: &mut ChatResponse) -> Result<(), String> {
        for c in &mut resp.choices {
            // Tool-call arguments are JSON text: `[REDACTED]` keeps them valid JSON.
            if let Some(ex) = &self.exfil {
                for call in &mut c.message.tool_calls {
                    if let Some(clean) = ex.scan(&call.arguments).map_err(|b| b.message())? {
                        call.arguments = clean;
                    }
                }
            }
            let texts = c.message.content.iter_mut().filter_map(|p| match p {
                Part::Text(t) => Some(t),
                Part::Image { .. } => None,
            });
            for t in texts.chain(c.refusal.as_mut()) {
                if let Some(ex) = &self.exfil {
                    if let Some(clean) = ex.scan(t).map_err(|b| b.message())? {
                        *t = clean;
                    }
                }
                if self.restoring() {
                    *t = self.masking.restore(t);
                }
            }
        }
        Ok(())
    }

    /// Streamed events of one chunk, rewritten in place: text goes through the sliding
    /// window and the restorer; held text is flushed before its choice's `Finish` and at
    /// the end of the stream. A blocked stream ends with one error event.
    pub fn on_events(&mut self, events: &mut Vec<StreamEvent>, end_of_stream: bool) {
        if self.blocked {
            events.clear();
            return;
        }
        if self.exfil.is_none() && !self.restoring() {
            return;
        }
        let mut out = Vec::with_capacity(events.len());
        let result = (|| -> Result<(), Blocked> {
            for ev in events.drain(..) {
                match ev {
                    StreamEvent::Text { index, text } => {
                        let t = self.text(index, &text, false, false)?;
                        if !t.is_empty() {
                            out.push(StreamEvent::Text { index, text: t });
                        }
                    }
                    StreamEvent::Refusal { index, text } => {
                        let t = self.text(index, &text, false, true)?;
                        if !t.is_empty() {
                            out.push(StreamEvent::Refusal { index, text: t });
                        }
                    }
                    StreamEvent::ToolCallStart { index, .. } => {
                        // Held arguments of the previous call go first (block order).
                        self.flush_args(index, &mut out)?;
                        out.push(ev);
                    }
                    StreamEvent::ToolCallArgs {
                        index,
                        call,
                        arguments,
                    } => {
                        let a = self.args(index, call, &arguments)?;
                        if !a.is_empty() {
                            out.push(StreamEvent::ToolCallArgs {
                                index,
                                call,
                                arguments: a,
                            });
                        }
                    }
                    StreamEvent::Finish { index, reason } => {
                        self.flush_args(index, &mut out)?;
                        self.flush_text(index, &mut out)?;
                        out.push(StreamEvent::Finish { index, reason });
                    }
                    other => out.push(other),
                }
            }
            if end_of_stream {
                let calls: Vec<u32> = self.calls.iter().map(|((i, _), _)| *i).collect();
                for index in calls {
                    self.flush_args(index, &mut out)?;
                }
                let held = self.choices.iter().chain(&self.refusals);
                let mut held: Vec<u32> = held.map(|(i, _)| *i).collect();
                held.dedup();
                for index in held {
                    self.flush_text(index, &mut out)?;
                }
            }
            Ok(())
        })();
        if let Err(b) = result {
            self.blocked = true;
            out = vec![StreamEvent::Error(ProviderError {
                status: 502,
                kind: "server_error".into(),
                message: b.message(),
                code: Some("response_blocked".into()),
            })];
        }
        *events = out;
    }

    /// Passes a fragment of a streamed tool call's arguments through the exfiltration window
    /// (arguments carry no placeholders to restore).
    fn args(&mut self, index: u32, call: u32, delta: &str) -> Result<String, Blocked> {
        let Some(ex) = self.exfil.clone() else {
            return Ok(delta.to_string());
        };
        let pos = match self.calls.iter().position(|(k, _)| *k == (index, call)) {
            Some(p) => p,
            None => {
                self.calls.push(((index, call), Scanner::default()));
                self.calls.len() - 1
            }
        };
        match self.calls.get_mut(pos) {
            Some((_, scanner)) => scanner.push(&ex, delta),
            None => Ok(delta.to_string()),
        }
    }

    /// Emits what the windows of choice `index`'s tool calls still hold.
    fn flush_args(&mut self, index: u32, out: &mut Vec<StreamEvent>) -> Result<(), Blocked> {
        let Some(ex) = self.exfil.clone() else {
            return Ok(());
        };
        while let Some(pos) = self.calls.iter().position(|((i, _), _)| *i == index) {
            let ((_, call), mut scanner) = self.calls.remove(pos);
            let rest = scanner.finish(&ex)?;
            if !rest.is_empty() {
                out.push(StreamEvent::ToolCallArgs {
                    index,
                    call,
                    arguments: rest,
                });
            }
        }
        Ok(())
    }

    /// Emits what choice `index` still holds back: content text, then refusal text.
    fn flush_text(&mut self, index: u32, out: &mut Vec<StreamEvent>) -> Result<(), Blocked> {
        let text = self.text(index, "", true, false)?;
        if !text.is_empty() {
            out.push(StreamEvent::Text { index, text });
        }
        let text = self.text(index, "", true, true)?;
        if !text.is_empty() {
            out.push(StreamEvent::Refusal { index, text });
        }
        Ok(())
    }

    /// Passes one delta of choice `index`'s content (or refusal) text, or with `flush` what it
    /// holds, through the exfiltration window and the restorer.
    fn text(
        &mut self,
        index: u32,
        delta: &str,
        flush: bool,
        refusal: bool,
    ) -> Result<String, Blocked> {
        let exfil = self.exfil.clone();
        let restoring = self.restoring();
        let list = if refusal {
            &mut self.refusals
        } else {
            &mut self.choices
        };
        let pos = match list.iter().position(|(i, _)| *i == index) {
            Some(p) => p,
            None if flush => return Ok(String::new()),
            None => {
                list.push((index, ChoiceText::default()));
                list.len() - 1
            }
        };
        let Some((_, st)) = list.get_mut(pos) else {
            return Ok(delta.to_string());
        };
        let scanned = match (&exfil, flush) {
            (Some(ex), false) => st.scanner.push(ex, delta)?,
            (Some(ex), true) => st.scanner.finish(ex)?,
            (None, _) => delta.to_string(),
        };
        if !restoring {
            if flush {
                list.remove(pos);
            }
            return Ok(scanned);
        }
        let mut out = st.restorer.push(&self.masking, &scanned);
        if flush {
            out += &st.restorer.finish(&self.masking);
            list.remove(pos);
        }
        Ok(out)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::providers::model::FinishReason;
    use crate::security::detect::{Detector, Detectors};
    use crate::security::exfil::ExfilAction;

    fn sec(exfil: Option<ExfilAction>) -> CallSecurity {
        let all = |names: &[&str]| Detectors {
            list: names
                .iter()
                .map(|n| Detector::builtin(n).unwrap())
                .collect(),
        };
        CallSecurity {
            pii: Some(Rc::new(Pii {
                detectors: all(&["email"]),
                action: PiiAction::Mask,
                restore: true,
            })),
            exfil: exfil.map(|action| {
                Rc::new(Exfil {
                    detectors: all(&["api_key"]),
                    action,
                    window: 64,
                })
            }),
            ..Default::default()
        }
    }

    fn text(ev: &[StreamEvent]) -> String {
        ev.iter()
            .filter_map(|e| match e {
                StreamEvent::Text { text, .. } => Some(text.as_str()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn masks_request_and_restores_and_redacts_stream() {
        let mut s = sec(Some(ExfilAction::Redact));
        let mut req: ChatRequest =
            serde_json::from_value::<serde_json::Value>(serde_json::json!({}))
                .map(|_| ChatRequest::default())
                .unwrap();
        req.messages.push(crate::providers::model::Message {
            role: Role::User,
            content: vec![Part::Text("mail bob@example.com".into())],
            tool_calls: vec![],
            tool_call_id: None,
            name: None,
        });
        s.on_request(&mut req, &["m"]).unwrap();
        assert_eq!(
            req.messages[0].content,
            vec![Part::Text("mail [EMAIL_1]".into())]
        );
        let answer = "Hi [EMAIL_1], key sk-abcdefghijklmnopqrstuvwxyz0123 bye";
        let mut got = String::new();
        for (i, ch) in answer.char_indices() {
            let mut ev = vec![StreamEvent::Text {
                index: 0,
                text: answer[i..i + ch.len_utf8()].to_string(),
            }];
            s.on_events(&mut ev, false);
            got += &text(&ev);
        }
        let mut ev = vec![StreamEvent::Finish {
            index: 0,
            reason: FinishReason::Stop,
        }];
        s.on_events(&mut ev, true);
        got += &text(&ev);
        assert!(matches!(ev.last(), Some(StreamEvent::Finish { .. })));
        assert_eq!(got, "Hi bob@example.com, key [REDACTED] bye");
    }

    #[test]
    fn placeholders_skip_what_any_message_of_the_request_already_says() {
        let mut s = sec(None);
        let mut req = ChatRequest::default();
        for text in ["mail bob@example.com", "the template says [EMAIL_1]"] {
            req.messages.push(crate::providers::model::Message {
                role: Role::User,
                content: vec![Part::Text(text.into())],
                tool_calls: vec![],
                tool_call_id: None,
                name: None,
            });
        }
        s.on_request(&mut req, &["m"]).unwrap();
        assert_eq!(
            req.messages[0].content,
            vec![Part::Text("mail [EMAIL_2]".into())]
        );
        assert_eq!(
            s.masking.restore("[EMAIL_1] is bob? [EMAIL_2]"),
            "[EMAIL_1] is bob? bob@example.com"
        );
    }

    #[test]
    fn streamed_tool_arguments_are_scanned_across_fragments() {
        let mut s = sec(Some(ExfilAction::Redact));
        let args = r#"{"token":"sk-abcdefghijklmnopqrstuvwxyz0123","q":"x"}"#;
        let mut got = String::new();
        let collect = |ev: &[StreamEvent], got: &mut String| {
            for e in ev {
                if let StreamEvent::ToolCallArgs {
                    arguments, call, ..
                } = e
                {
                    assert_eq!(*call, 0);
                    got.push_str(arguments);
                }
            }
        };
        for (i, ch) in args.char_indices() {
            let mut ev = vec![StreamEvent::ToolCallArgs {
                index: 0,
                call: 0,
                arguments: args[i..i + ch.len_utf8()].to_string(),
            }];
            s.on_events(&mut ev, false);
            collect(&ev, &mut got);
        }
        let mut ev = vec![StreamEvent::Finish {
            index: 0,
            reason: FinishReason::ToolCalls,
        }];
        s.on_events(&mut ev, true);
        collect(&ev, &mut got);
        assert!(matches!(ev.last(), Some(StreamEvent::Finish { .. })));
        assert_eq!(got, r#"{"token":"[REDACTED]","q":"x"}"#);
    }

    #[test]
    fn json_answer_text_and_tool_arguments_are_scanned() {
        use crate::providers::model::{Choice, Message, ToolCall};
        let mut s = sec(Some(ExfilAction::Redact));
        s.masking
            .pairs
            .push(("[EMAIL_1]".into(), "bob@example.com".into()));
        let mut resp = ChatResponse {
            id: "x".into(),
            model: "m".into(),
            created: 0,
            usage: None,
            choices: vec![Choice {
                index: 0,
                finish_reason: Some(FinishReason::Stop),
                message: Message {
                    role: Role::Assistant,
                    content: vec![Part::Text(
                        "to [EMAIL_1]: sk-abcdefghijklmnopqrstuvwxyz0123".into(),
                    )],
                    tool_calls: vec![ToolCall {
                        id: "c".into(),
                        name: "f".into(),
                        arguments: r#"{"k":"sk-abcdefghijklmnopqrstuvwxyz0123"}"#.into(),
                    }],
                    tool_call_id: None,
                    name: None,
                },
                // A refusal is model output too: scanned and restored like content.
                refusal: Some("no, [EMAIL_1], sk-abcdefghijklmnopqrstuvwxyz0123".into()),
            }],
        };
        s.on_response(&mut resp).unwrap();
        let m = &resp.choices[0].message;
        assert_eq!(
            m.content,
            vec![Part::Text("to bob@example.com: [REDACTED]".into())]
        );
        assert_eq!(
            resp.choices[0].refusal.as_deref(),
            Some("no, bob@example.com, [REDACTED]")
        );
        assert_eq!(m.tool_calls[0].arguments, r#"{"k":"[REDACTED]"}"#);
        let mut b = sec(Some(ExfilAction::Block));
        assert!(b.on_response(&mut resp.clone()).is_ok());
        resp.choices[0].message.content = vec![Part::Text("AKIAIOSFODNN7EXAMPLE".into())];
        let mut b = CallSecurity {
            exfil: Some(Rc::new(Exfil {
                detectors: Detectors {
                    list: vec![Detector::builtin("aws_access_key").unwrap()],
                },
                action: ExfilAction::Block,
                window: 64,
            })),
            ..Default::default()
        };
        assert!(b.on_response(&mut resp).unwrap_err().contains("AWS_KEY"));
    }

    /// Streamed refusal text goes through its own exfiltration window and the restorer, and
    /// stays a refusal: a key split across refusal deltas is caught.
    #[test]
    fn streamed_refusals_are_scanned_and_restored() {
        let mut s = sec(Some(ExfilAction::Redact));
        s.masking
            .pairs
            .push(("[EMAIL_1]".into(), "bob@example.com".into()));
        let mut got = String::new();
        for piece in ["no [EMA", "IL_1], sk-abcdefghij", "klmnopqrstuvwxyz0123 ok"] {
            let mut ev = vec![StreamEvent::Refusal {
                index: 0,
                text: piece.into(),
            }];
            s.on_events(&mut ev, false);
            for e in ev {
                match e {
                    StreamEvent::Refusal { text, .. } => got.push_str(&text),
                    other => panic!("{other:?}"),
                }
            }
        }
        let mut ev = vec![StreamEvent::Finish {
            index: 0,
            reason: FinishReason::Stop,
        }];
        s.on_events(&mut ev, true);
        for e in &ev {
            if let StreamEvent::Refusal { text, .. } = e {
                got.push_str(text);
            }
        }
        assert!(matches!(ev.last(), Some(StreamEvent::Finish { .. })));
        assert_eq!(got, "no bob@example.com, [REDACTED] ok");
    }

    #[test]
    fn blocked_stream_ends_with_one_error() {
        let mut s = sec(Some(ExfilAction::Block));
        let mut ev = vec![StreamEvent::Text {
            index: 0,
            text: "here: sk-abcdefghijklmnopqrstuvwxyz0123".into(),
        }];
        s.on_events(&mut ev, false);
        assert!(matches!(ev.as_slice(), [StreamEvent::Error(e)] if e.status == 502));
        let mut ev = vec![StreamEvent::Text {
            index: 0,
            text: "more".into(),
        }];
        s.on_events(&mut ev, true);
        assert!(ev.is_empty());
    }

    mod flow {
        use crate::config::Gateway;
        use crate::filter::{Action, Flow};
        use crate::host::mock::MockHost;
        use serde_json::json;
        use std::rc::Rc;

        fn gateway() -> Rc<Gateway> {
            let llm = |url: &str| {
                json!([{"host": ["http://127.0.0.1:9001"], "url_pattern": url,
                        "extra_config": {"ai/llm": {"openai": {"v1": {"credentials": "sk-provider"}}}}}])
            };
            let doc = json!({
                "version": 3,
                "extra_config": {"auth/api-keys": {"keys": [
                    {"key": "k-admin", "roles": ["admin"]}, {"key": "k-user", "roles": ["user"]}],
                    "propagate_role": "X-Role"}},
                "endpoints": [
                    {"endpoint": "/v1/chat/completions", "method": "POST", "backend": llm("/v1/chat/completions"),
                     "extra_config": {"auth/api-keys": {"roles": ["admin", "user"]},
                        "security/pii": {"detectors": ["email"], "action": "block"}}},
                    {"endpoint": "/v1/messages", "method": "POST", "backend": llm("/v1/chat/completions"),
                     "extra_config": {"auth/api-keys": {"roles": ["admin"]}}},
                    {"endpoint": "/plain", "method": "GET",
                     "backend": [{"host": ["http://127.0.0.1:9001"], "url_pattern": "/p"}],
                     "extra_config": {"auth/api-keys": {"roles": [], "strategy": "query_string", "identifier": "api_key"}}},
                    {"endpoint": "/jwt", "method": "GET",
                     "backend": [{"host": ["http://127.0.0.1:9001"], "url_pattern": "/j"}],
                     "extra_config": {"auth/validator": {"alg": "RS256", "jwk_local_path": "/k.json", "roles": ["r1"]}}}
                ]
            });
            Rc::new(Gateway::from_value(&doc, &|_| None).unwrap())
        }

        fn run(method: &str, path: &str, headers: &[(&str, &str)]) -> MockHost {
            let mut flow = Flow::new(gateway());
            let mut h = MockHost::request(method, path, headers);
            flow.on_request_headers(&mut h, false);
            h
        }

        #[test]
        fn api_keys_401_403_in_each_api_shape() {
            let h = run("POST", "/v1/chat/completions", &[]);
            let r = h.reply.unwrap();
            assert_eq!(r.status, 401);
            assert_eq!(
                r.json(),
                json!({"error": {"message": "an API key is required", "type": "authentication_error", "param": null, "code": "invalid_api_key"}})
            );
            let r = run("POST", "/v1/messages", &[("x-api-key", "k-user")])
                .reply
                .unwrap();
            assert_eq!(r.status, 403);
            assert_eq!(
                r.json(),
                json!({"type": "error", "error": {"type": "permission_error", "message": "this API key may not use this endpoint"}})
            );
            let r = run("POST", "/v1/messages", &[("x-api-key", "wrong")])
                .reply
                .unwrap();
            assert_eq!(r.json()["error"]["type"], "authentication_error");
            // Accepted: the role is propagated and the client key never goes upstream.
            let h = run("POST", "/v1/messages", &[("x-api-key", "k-admin")]);
            assert!(h.reply.is_none());
            assert_eq!(h.request_values("x-role"), vec!["admin"]);
            assert!(h.request_values("x-api-key").is_empty());
        }

        #[test]
        fn query_string_key_is_removed_before_upstream() {
            let h = run("GET", "/plain?a=1&api_key=k-user&b=2", &[]);
            assert!(h.reply.is_none());
            assert_eq!(h.request_values(":path"), vec!["/p?a=1&b=2"]);
            assert_eq!(h.request_values("x-role"), vec!["ANY"]);
            assert_eq!(run("GET", "/plain?a=1", &[]).reply.unwrap().status, 401);
        }

        #[test]
        fn jwt_payload_roles() {
            // {"roles":["r1"]} and {"roles":["r2"]}, base64url
            let ok = run(
                "GET",
                "/jwt",
                &[("x-jwt-payload", "eyJyb2xlcyI6WyJyMSJdfQ")],
            );
            assert!(ok.reply.is_none());
            assert!(ok.request_values("x-jwt-payload").is_empty());
            let r = run(
                "GET",
                "/jwt",
                &[("x-jwt-payload", "eyJyb2xlcyI6WyJyMiJdfQ")],
            )
            .reply
            .unwrap();
            assert_eq!(r.status, 403);
            assert_eq!(run("GET", "/jwt", &[]).reply.unwrap().status, 401);
        }

        #[test]
        fn pii_block_is_400_before_upstream() {
            let mut flow = Flow::new(gateway());
            let body = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "I am bob@example.com"}]});
            let body = body.to_string();
            let mut h = MockHost::request(
                "POST",
                "/v1/chat/completions",
                &[("authorization", "Bearer k-user")],
            )
            .with_body(body.as_bytes());
            assert_eq!(flow.on_request_headers(&mut h, false), Action::Pause);
            flow.on_request_body(&mut h, body.len(), true);
            let r = h.reply.clone().unwrap();
            assert_eq!(r.status, 400);
            assert_eq!(r.json()["error"]["code"], "content_blocked");
            assert!(!String::from_utf8_lossy(&r.body).contains("bob@"));
            // The local reply passes through the response callbacks untranslated.
            let mut h = h.with_response_headers(&[(":status", "400")]);
            assert_eq!(flow.on_response_headers(&mut h, false), Action::Continue);
            assert_eq!(flow.on_response_body(&mut h, 0, true), Action::Continue);
        }
    }
}
