//! Walking JSON values.

use serde_json::Value;

/// Calls `f` on every string value of a JSON value, at any depth (not on object keys).
pub fn each_string(v: &mut Value, f: &mut dyn FnMut(&mut String)) {
    match v {
        Value::String(s) => f(s),
        Value::Array(a) => a.iter_mut().for_each(|x| each_string(x, f)),
        Value::Object(o) => o.values_mut().for_each(|x| each_string(x, f)),
        _ => {}
    }
}
