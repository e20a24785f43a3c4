//! Client requests through the OpenAI and Anthropic front doors, then `encode_request` for
//! every provider wire: errors are JSON error bodies, encoded bodies are JSON, paths start
//! with `/`, headers have no CR/LF.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tollgate::providers::model::ChatRequest;
use tollgate::providers::{
    self, anthropic, openai, AwsCredentials, Defaults, FrontDoor, Target, Wire,
};
use tollgate_fuzz::{is_json, WIRES};

fn encode_everywhere(req: &ChatRequest) {
    let creds = AwsCredentials {
        access_key_id: "AKIDEXAMPLE".into(),
        secret_access_key: "secret".into(),
        session_token: Some("token".into()),
        region: "us-east-1".into(),
    };
    let defaults = Defaults {
        max_tokens: Some(64),
        temperature: Some(0.5),
        top_p: None,
    };
    for wire in WIRES {
        let t = Target {
            wire,
            model: if req.model.is_empty() {
                "m"
            } else {
                &req.model
            },
            api_version: (wire == Wire::Azure).then_some("2024-10-21"),
            defaults: &defaults,
            aws: (wire == Wire::Bedrock).then_some(&creds),
            host: "bedrock-runtime.us-east-1.amazonaws.com",
            now_unix: 1_700_000_000,
        };
        if let Ok(out) = providers::encode_request(req, &t) {
            assert!(out.path.starts_with('/'), "{wire:?} path {:?}", out.path);
            assert!(is_json(&out.body), "{wire:?} body is not JSON");
            for (k, v) in &out.headers {
                assert!(
                    !k.contains(['\r', '\n']) && !v.contains(['\r', '\n']),
                    "{wire:?} header {k}: {v:?}"
                );
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    for front in [FrontDoor::OpenAi, FrontDoor::Anthropic] {
        match front.parse(data) {
            Ok(req) => encode_everywhere(&req),
            Err(e) => assert!(is_json(&anthropic::client_error_body(&e))),
        }
    }
    let _ = openai::parse_request(data);
    let _ = anthropic::parse_request(data);
});
