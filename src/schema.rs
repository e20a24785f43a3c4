//! The extended JSON Schema: KrakenD's official v2.13 schema (draft 2019-09, bundled) plus
//! tollgate's own namespaces and fields (schema/tollgate-extensions.json). Host-only
//! (`tollgate check`). KrakenD's v2.12 schema (draft-07) stays in schema/ for the test that
//! every document it accepts is accepted by v2.13 too (v2.12 configurations keep working).

use serde_json::{Map, Value};

/// KrakenD's official bundled schema (v2.13, draft 2019-09, `$defs`), verbatim.
pub const KRAKEND: &str = include_str!("../schema/krakend-v2.13.json");
/// tollgate's patches over it.
pub const EXTENSIONS: &str = include_str!("../schema/tollgate-extensions.json");

/// Builds the extended schema. Errors name the patch that does not apply.
pub fn extended() -> Result<Value, String> {
    let mut schema: Value =
        serde_json::from_str(KRAKEND).map_err(|e| format!("krakend schema: {e}"))?;
    let ext: Value =
        serde_json::from_str(EXTENSIONS).map_err(|e| format!("tollgate extensions: {e}"))?;
    let patches = ext
        .get("patches")
        .and_then(Value::as_array)
        .ok_or("tollgate extensions: patches must be an array")?;
    for (i, p) in patches.iter().enumerate() {
        apply(&mut schema, p).map_err(|e| format!("patch {i}: {e}"))?;
    }
    schema["title"] =
        Value::String("tollgate: KrakenD v2.13 schema with tollgate extensions".into());
    Ok(schema)
}

/// One patch: `{"at": pointer, "remove": [keys]?, "add": {...}?}`. `remove` deletes keys
/// of the object at `at` (each must exist, so a patch that no longer matches KrakenD's
/// schema fails loudly); then `add` is deep-merged into it.
fn apply(schema: &mut Value, p: &Value) -> Result<(), String> {
    let at = p.get("at").and_then(Value::as_str).ok_or("at")?;
    let remove = match p.get("remove") {
        None => Vec::new(),
        Some(r) => r
            .as_array()
            .and_then(|keys| keys.iter().map(Value::as_str).collect::<Option<Vec<_>>>())
            .ok_or("remove must be an array of keys")?,
    };
    let add = match p.get("add") {
        None => None,
        Some(a) => Some(a.as_object().ok_or("add must be an object")?),
    };
    if remove.is_empty() && add.is_none() {
        return Err("needs add or remove".into());
    }
    let target = schema
        .pointer_mut(at)
        .and_then(Value::as_object_mut)
        .ok_or(format!("{at} is not an object in the KrakenD schema"))?;
    for key in remove {
        target
            .remove(key)
            .ok_or(format!("{at}: cannot remove {key}: no such key"))?;
    }
    if let Some(add) = add {
        merge(target, add);
    }
    Ok(())
}

fn merge(target: &mut Map<String, Value>, add: &Map<String, Value>) {
    for (k, v) in add {
        match (target.get_mut(k), v) {
            (Some(Value::Object(t)), Value::Object(a)) => merge(t, a),
            (Some(Value::Array(t)), Value::Array(a)) => t.extend(a.iter().cloned()),
            _ => {
                target.insert(k.clone(), v.clone());
            }
        }
    }
}

/// Validates a document; each error as `$.json.path: message`.
pub fn validate(schema: &Value, doc: &Value) -> Result<Vec<String>, String> {
    let validator = jsonschema::validator_for(schema).map_err(|e| format!("schema: {e}"))?;
    Ok(validator
        .iter_errors(doc)
        .map(|e| format!("{}: {}", pointer_to_path(&e.instance_path().to_string()), e))
        .collect())
}

/// `/endpoints/0/backend` → `$.endpoints[0].backend`.
pub fn pointer_to_path(pointer: &str) -> String {
    let mut out = String::from("$");
    for part in pointer.split('/').skip(1) {
        let part = part.replace("~1", "/").replace("~0", "~");
        if part.chars().all(|c| c.is_ascii_digit()) && !part.is_empty() {
            out.push_str(&format!("[{part}]"));
        } else {
            out.push('.');
            out.push_str(&part);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn seed_example_validates_and_unknown_namespace_does_not() {
        let schema = extended().unwrap();
        let seed = json!({"version": 3, "$schema": "https://www.krakend.io/schema/krakend.json", "host": ["localhost:8080"],
            "echo_endpoint": true, "endpoints": [{"endpoint": "/llm/openai", "method": "POST", "backend": [{
            "host": ["https://api.openai.com"], "url_pattern": "/v1/chat/completions", "extra_config": {"modifier/martian": {
            "header.Modifier": {"scope": ["request"], "name": "Authorization", "value": "Bearer YOUR_OPENI_API_KEY"}}}}]}]});
        assert_eq!(validate(&schema, &seed).unwrap(), Vec::<String>::new());
        let mut bad = seed.clone();
        bad["endpoints"][0]["extra_config"] = json!({"tollgate/nope": {}});
        let errs = validate(&schema, &bad).unwrap();
        assert!(
            errs.iter()
                .any(|e| e.starts_with("$.endpoints[0].extra_config")),
            "{errs:?}"
        );
    }

    /// A gateway document with one `ai/llm` backend.
    fn gateway(host: &str, llm: Value) -> Value {
        json!({"version": 3, "endpoints": [{"endpoint": "/v1/chat/completions", "method": "POST",
            "backend": [{"host": [host], "url_pattern": "/v1/chat/completions", "extra_config": {"ai/llm": llm}}]}]})
    }

    const AT: &str = "$.endpoints[0].backend[0].extra_config.ai/llm";

    fn all_variables() -> Value {
        json!({"model": "m", "max_tokens": 10, "max_output_tokens": 10, "temperature": 2, "top_p": 1,
            "stop_sequences": ["END"], "stop": ["STOP"], "n": 1, "candidate_count": 1, "random_seed": 7,
            "seed": 7, "extra_payload": {"service_tier": "flex"}, "top_k": 5, "safe_prompt": true,
            "truncation": "auto", "@comment": "meta keys are allowed"})
    }

    /// Every `ai/llm` form tollgate compiles (src/providers/backend.rs) is valid for the extended
    /// schema, and both agree.
    #[test]
    fn every_tollgate_llm_form_validates_and_compiles() {
        let schema = extended().unwrap();
        let aws = json!({"access_key_id": "{{ env \"AKID\" }}", "secret_access_key": "{{ env \"SECRET\" }}", "session_token": "t"});
        let bedrock_host = "https://bedrock-runtime.eu-west-1.amazonaws.com";
        let mut cases = vec![
            (
                "https://api.openai.com",
                json!({"openai": {"v1": {"credentials": "{{ env \"KEY\" }}", "debug": false,
                "variables": {"model": "gpt-4o", "max_output_tokens": 100, "temperature": 0.5, "top_p": 0.9, "truncation": "auto"}}}}),
            ),
            (
                "https://api.openai.com",
                json!({"openai": {"version": "v1", "credentials": "k", "variables": {"model": "gpt-4o"}}}),
            ),
            (
                "https://api.openai.com",
                json!({"@comment": "x", "openai": {"@comment": "y", "v1": {"credentials": "k"}}}),
            ),
            (
                "https://api.anthropic.com",
                json!({"anthropic": {"v1": {"credentials": "k", "aliases": ["fast"], "default": true,
                "variables": {"model": "claude-3-5-haiku-latest", "max_tokens": 512, "stop_sequences": ["END"], "top_k": 5}}}}),
            ),
            (
                "https://api.anthropic.com",
                json!({"anthropic": {"version": "v1", "credentials": "k", "aliases": ["claude"]}}),
            ),
            (
                "https://generativelanguage.googleapis.com",
                json!({"gemini": {"v1beta": {"credentials": "k",
                "variables": {"model": "gemini-2.0-flash", "candidate_count": 1, "max_output_tokens": 64}}}}),
            ),
            (
                "https://generativelanguage.googleapis.com",
                json!({"gemini": {"version": "v1beta", "credentials": "k"}}),
            ),
            (
                "https://api.mistral.ai",
                json!({"mistral": {"v1": {"credentials": "k",
                "variables": {"model": "mistral-small-latest", "random_seed": 1, "safe_prompt": true, "stop": ["x"], "n": 1}}}}),
            ),
            (
                "https://api.mistral.ai",
                json!({"mistral": {"version": "v1", "credentials": "k"}}),
            ),
            (
                bedrock_host,
                json!({"bedrock": {"v1": {"credentials": aws.clone(),
                "variables": {"model": "anthropic.claude-3-haiku-20240307-v1:0"}}}}),
            ),
            (
                // KrakenD v2.13: a Bedrock API key, model in url_pattern.
                bedrock_host,
                json!({"bedrock": {"v1": {"credentials": "bedrock-api-key-xxx", "debug": true,
                "variables": {"max_tokens": 1500}}}}),
            ),
            (
                "https://bedrock.example.com",
                json!({"bedrock": {"version": "v1", "region": "us-east-1",
                "credentials": {"access_key_id": "a", "secret_access_key": "b"}}}),
            ),
            (
                "https://x.openai.azure.com",
                json!({"azure": {"v1": {"credentials": "k", "api_version": "2024-10-21", "variables": {"model": "my-deploy"}}}}),
            ),
            (
                "https://x.openai.azure.com",
                json!({"azure": {"version": "v1", "credentials": "k", "aliases": ["gpt"]}}),
            ),
            ("http://127.0.0.1:11434", json!({"ollama": {"v1": {}}})),
            (
                "http://127.0.0.1:11434",
                json!({"ollama": {"version": "v1", "variables": {"model": "llama3.1"}}}),
            ),
            (
                "http://127.0.0.1:8000",
                json!({"vllm": {"v1": {"credentials": "k", "default": true}}}),
            ),
            (
                "http://127.0.0.1:8000",
                json!({"openai-compatible": {"v1": {"aliases": ["groq"], "variables": {"model": "llama-3.1-8b-instant"}}}}),
            ),
            (
                "http://127.0.0.1:8000",
                json!({"openai-compatible": {"version": "v1", "credentials": "k"}}),
            ),
        ];
        // Every KrakenD variable name is accepted for every provider.
        for (name, version, settings) in [
            ("openai", "v1", json!({"credentials": "k"})),
            ("anthropic", "v1", json!({"credentials": "k"})),
            ("gemini", "v1beta", json!({"credentials": "k"})),
            ("mistral", "v1", json!({"credentials": "k"})),
            ("bedrock", "v1", json!({"credentials": aws.clone()})),
            ("azure", "v1", json!({"credentials": "k"})),
            ("ollama", "v1", json!({})),
            ("vllm", "v1", json!({})),
            ("openai-compatible", "v1", json!({})),
        ] {
            let mut s = settings;
            s["variables"] = all_variables();
            cases.push((bedrock_host, json!({name: {version: s}})));
        }
        let env = |_: &str| Some("placeholder".to_string());
        for (host, llm) in cases {
            let doc = gateway(host, llm.clone());
            assert_eq!(
                validate(&schema, &doc).unwrap(),
                Vec::<String>::new(),
                "{llm}"
            );
            if let Err(e) = crate::config::Gateway::from_value(&doc, &env) {
                panic!("{llm}: {e}");
            }
        }
    }

    /// Typos and shapes tollgate refuses are refused by the schema too, at the right path.
    #[test]
    fn typos_and_unknown_providers_are_reported_with_their_path() {
        let schema = extended().unwrap();
        let cases = [
            (json!({"openai": {"v1": {"credentials": "k", "variables": {"modle": "x"}}}}),
             format!("{AT}.openai.v1.variables: Additional properties are not allowed ('modle' was unexpected)")),
            (json!({"anthropic": {"v1": {"credentials": "k", "aliase": ["x"]}}}),
             format!("{AT}.anthropic.v1: Additional properties are not allowed ('aliase' was unexpected)")),
            (json!({"ollama": {"v1": {"variables": {"modle": "x"}}}}),
             format!("{AT}.ollama.v1.variables: Additional properties are not allowed ('modle' was unexpected)")),
            (json!({"openai": {"version": "v1", "credentials": "k", "aliase": ["x"]}}),
             format!("{AT}.openai: Additional properties are not allowed ('aliase' was unexpected)")),
            (json!({"cohere": {"v1": {}}}),
             format!("{AT}: Additional properties are not allowed ('cohere' was unexpected)")),
            (json!({"gemini": {"v1beta": {"credentials": "k", "variables": {"top_p": 1.5}}}}),
             format!("{AT}.gemini.v1beta.variables.top_p: 1.5 is greater than the maximum of 1")),
            (json!({"openai": {"v1": {"credentials": "k", "api_version": "x"}}}),
             format!("{AT}.openai.v1: Additional properties are not allowed ('api_version' was unexpected)")),
            (json!({"azure": {"v1": {"credentials": "k", "region": "x"}}}),
             format!("{AT}.azure.v1: Additional properties are not allowed ('region' was unexpected)")),
            (json!({"openai": {"v1": {"variables": {"model": "m"}}}}),
             format!("{AT}.openai.v1: \"credentials\" is a required property")),
            (json!({"bedrock": {"v1": {"credentials": {"access_key_id": "a", "secret_acces_key": "b"}}}}),
             format!("{AT}.bedrock.v1.credentials: \"secret_access_key\" is a required property")),
            (json!({"bedrock": {"v1": {"credentials": 42}}}),
             format!("{AT}.bedrock.v1.credentials: 42 is not of types \"string\", \"object\"")),
            (json!({"openai": {"version": "v2", "credentials": "k"}}),
             format!("{AT}.openai.version: \"v1\" was expected")),
        ];
        for (llm, want) in cases {
            let errs = validate(&schema, &gateway("https://x.example.com", llm.clone())).unwrap();
            assert!(errs.contains(&want), "{llm}: {errs:#?}");
        }
        // Refused without a precise message, still refused (and compiled to an error).
        let env = |_: &str| Some("placeholder".to_string());
        for llm in [
            json!({}),
            json!({"openai": {"v1": {"credentials": "k"}}, "anthropic": {"v1": {"credentials": "k"}}}),
            json!({"openai": {"v1": {"credentials": "k"}, "credentials": "k"}}),
            json!({"openai": {"credentials": "k"}}),
            json!({"openai": {"v1": {"credentials": "k", "input_template": "/t.tmpl"}}}),
            json!({"mistral": {"version": "v1"}}),
        ] {
            let doc = gateway("https://x.example.com", llm.clone());
            let errs = validate(&schema, &doc).unwrap();
            assert!(errs.iter().any(|e| e.starts_with(AT)), "{llm}: {errs:#?}");
            assert!(
                crate::config::Gateway::from_value(&doc, &env).is_err(),
                "{llm}"
            );
        }
    }

    /// Every property a patch adds (or changes) ends up with a title and a description.
    #[test]
    fn every_added_property_is_documented() {
        let schema = extended().unwrap();
        let ext: Value = serde_json::from_str(EXTENSIONS).unwrap();
        let mut checked = 0;
        for p in ext["patches"].as_array().unwrap() {
            if let Some(add) = p.get("add") {
                documented(&schema, p["at"].as_str().unwrap(), add, false, &mut checked);
            }
        }
        assert!(checked > 50, "{checked}");
    }

    fn documented(schema: &Value, at: &str, add: &Value, is_property: bool, checked: &mut usize) {
        if is_property {
            let mut node = schema.pointer(at).unwrap();
            while let Some(r) = node.get("$ref").and_then(Value::as_str) {
                let pointer = r.trim_start_matches('#').replace("%3A", ":");
                node = schema.pointer(&pointer).unwrap_or_else(|| panic!("{r}"));
            }
            for key in ["title", "description"] {
                assert!(
                    node.get(key)
                        .and_then(Value::as_str)
                        .is_some_and(|s| !s.is_empty()),
                    "{at}: no {key}"
                );
            }
            *checked += 1;
        }
        let Some(map) = add.as_object() else { return };
        for (k, v) in map {
            let escaped = k.replace('~', "~0").replace('/', "~1");
            let child = format!("{at}/{escaped}");
            if k == "properties" {
                for (name, sub) in v.as_object().unwrap() {
                    let name = name.replace('~', "~0").replace('/', "~1");
                    documented(schema, &format!("{child}/{name}"), sub, true, checked);
                }
            } else if v.is_object()
                && !["patternProperties", "if", "then", "else"].contains(&k.as_str())
            {
                documented(schema, &child, v, false, checked);
            }
        }
    }

    #[test]
    fn patches_remove_then_add_and_fail_loudly() {
        let mut s = json!({"a": {"required": ["x"], "maxProperties": 1, "properties": {"x": {}}}});
        apply(&mut s, &json!({"at": "/a", "remove": ["required", "maxProperties"], "add": {"required": ["y"], "properties": {"y": {}}}})).unwrap();
        assert_eq!(
            s,
            json!({"a": {"required": ["y"], "properties": {"x": {}, "y": {}}}})
        );
        apply(&mut s, &json!({"at": "/a", "add": {"required": ["z"]}})).unwrap();
        assert_eq!(s["a"]["required"], json!(["y", "z"]));
        let err = |p: Value| apply(&mut s.clone(), &p).unwrap_err();
        assert_eq!(
            err(json!({"at": "/a", "remove": ["nope"]})),
            "/a: cannot remove nope: no such key"
        );
        assert_eq!(
            err(json!({"at": "/b", "add": {}})),
            "/b is not an object in the KrakenD schema"
        );
        assert_eq!(err(json!({"at": "/a"})), "needs add or remove");
        assert_eq!(
            err(json!({"at": "/a", "remove": "required"})),
            "remove must be an array of keys"
        );
        // Definition keys are URLs: `~1` unescapes to `/`, no percent-decoding.
        let mut k = serde_json::from_str::<Value>(KRAKEND).unwrap();
        apply(&mut k, &json!({"at": "/$defs/https:~1~1www.krakend.io~1schema~1v2.13~1ai~1llm.json", "remove": ["maxProperties"]})).unwrap();
    }

    #[test]
    fn security_namespaces_validate_field_by_field() {
        let schema = extended().unwrap();
        let ep = |extra: serde_json::Value| {
            json!({"version": 3,
                "extra_config": {
                    "auth/api-keys": {"keys": [{"key": "k", "roles": ["a"]}], "hash": "sha256", "salt": "s", "propagate_role": "X-Role"},
                    "ai/prompt-guard": {"guards": [{"name": "jb", "kind": "regex", "severity": "high", "config": {"patterns": ["x"]}}]}},
                "endpoints": [{"endpoint": "/v1/chat/completions", "method": "POST", "extra_config": extra,
                    "backend": [{"host": ["http://127.0.0.1:1"], "url_pattern": "/"}]}]})
        };
        let good = ep(json!({
            "auth/api-keys": {"roles": ["a"], "strategy": "query_string", "identifier": "key"},
            "security/pii": {"detectors": ["email", "credit_card"], "custom": [{"name": "emp", "pattern": "EMP-[0-9]+"}], "action": "mask", "restore": true},
            "security/exfiltration": {"action": "block", "window": 128},
            "ai/prompt-guard": {"guards": ["jb", "!low"], "deny": ["x"], "allow": ["y"], "max_prompt_bytes": 10, "max_prompt_chars": 10, "models_by_role": {"a": ["*"]}}
        }));
        assert_eq!(validate(&schema, &good).unwrap(), Vec::<String>::new());
        for bad in [
            json!({"security/pii": {"detectors": ["mail"]}}),
            json!({"security/pii": {"action": "hide"}}),
            json!({"security/pii": {"custom": [{"name": "x"}]}}),
            json!({"security/exfiltration": {"window": 1}}),
            json!({"security/exfiltration": {"nope": 1}}),
            json!({"ai/prompt-guard": {"max_prompt_bytes": "10"}}),
        ] {
            assert!(
                !validate(&schema, &ep(bad.clone())).unwrap().is_empty(),
                "{bad}"
            );
        }
    }

    #[test]
    fn pointers_become_paths() {
        assert_eq!(
            pointer_to_path("/endpoints/0/extra_config/ai~1llm"),
            "$.endpoints[0].extra_config.ai/llm"
        );
        assert_eq!(pointer_to_path(""), "$");
    }
}
