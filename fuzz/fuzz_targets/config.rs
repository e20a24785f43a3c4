//! `Gateway::from_json` on arbitrary bytes: an error is an `Err` naming a JSON path, never a
//! panic; an accepted configuration yields an Envoy bootstrap.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tollgate::config::Gateway;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    // Every `{{ env "X" }}` is set, except names of odd length (missing variables).
    let lookup = |name: &str| name.len().is_multiple_of(2).then(|| "sk-x".to_string());
    match Gateway::from_json(&text, &lookup) {
        Ok(gw) => {
            let Ok(doc) = serde_json::from_str::<serde_json::Value>(&text) else {
                panic!("an accepted configuration is not JSON");
            };
            let b = tollgate::envoy::bootstrap(&gw, &doc, &text, &Default::default());
            if tollgate::envoy::to_yaml(&b).is_err() {
                panic!("an accepted configuration gives no bootstrap YAML");
            }
            for ep in &gw.endpoints {
                let _ = ep.backend_for("gpt-4o");
                let _ = ep.models_path();
            }
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(
                msg.starts_with('$'),
                "config error without a JSON path: {msg}"
            );
        }
    }
});
