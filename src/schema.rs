//! The extended JSON Schema: KrakenD's official v2.12 schema plus tollgate's own
//! namespaces and fields (schema/tollgate-extensions.json). Host-only (`tollgate check`).

use serde_json::{Map, Value};

/// KrakenD's official bundled schema (draft-07), verbatim.
pub const KRAKEND: &str = include_str!("../schema/krakend-v2.12.json");
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
        let at = p
            .get("at")
            .and_then(Value::as_str)
            .ok_or(format!("patch {i}: at"))?;
        let add = p
            .get("add")
            .and_then(Value::as_object)
            .ok_or(format!("patch {i}: add"))?;
        let target = schema
            .pointer_mut(at)
            .and_then(Value::as_object_mut)
            .ok_or(format!(
                "patch {i}: {at} is not an object in the KrakenD schema"
            ))?;
        merge(target, add);
    }
    schema["title"] =
        Value::String("tollgate: KrakenD v2.12 schema with tollgate extensions".into());
    Ok(schema)
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
