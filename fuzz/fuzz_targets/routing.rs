//! Path patterns and `routing::find`. Input lines: a pattern, more patterns, and last the
//! request path. A concrete path built from a valid pattern matches it with the same values.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tollgate::routing::{self, HostUrl, PathPattern, UrlPattern};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut lines: Vec<&str> = text.split('\n').collect();
    let path = lines.pop().unwrap_or_default();
    let mut patterns = Vec::new();
    for (i, src) in lines.iter().enumerate() {
        let Ok(p) = PathPattern::parse(src) else {
            continue;
        };
        if i == 0 {
            let values: Vec<String> = p
                .params()
                .enumerate()
                .map(|(n, _)| format!("v{n}"))
                .collect();
            let mut it = values.iter();
            let concrete: String = p
                .as_str()
                .split('/')
                .map(|seg| {
                    if seg.starts_with('{') && seg.ends_with('}') && seg.len() > 2 {
                        it.next().cloned().unwrap_or_default()
                    } else {
                        seg.to_string()
                    }
                })
                .collect::<Vec<_>>()
                .join("/");
            let Some(got) = p.matches(&concrete) else {
                panic!("{src:?} does not match {concrete:?}");
            };
            let got: Vec<String> = got.iter().map(|(_, v)| v.clone()).collect();
            assert_eq!(got, values, "{src:?} on {concrete:?}");
            if let Ok(u) = UrlPattern::parse(&format!("/up{}", p.as_str()), &p) {
                if let Some(params) = p.matches(path) {
                    let _ = u.render(&params);
                }
            }
        }
        let method = if i % 2 == 0 { "POST" } else { "GET" };
        patterns.push((p, method));
    }
    for (p, _) in &patterns {
        let _ = p.matches(path);
    }
    for method in ["POST", "GET", ""] {
        let _ = routing::find(patterns.iter().map(|(p, m)| (p, *m)), method, path);
    }
    let _ = HostUrl::parse(path);
});
