//! Endpoint matching (method + path with `{param}` segments), `url_pattern`
//! substitution, and cluster naming shared by the filter and the bootstrap generator.

use crate::support::encoding::percent_decode_strict;
use std::fmt;

pub mod forward;
pub mod martian;

/// One segment of an endpoint path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param(String),
}

/// A KrakenD endpoint path such as `/llm/{provider}/chat`: `{param}` is a whole segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPattern {
    source: String,
    segments: Vec<Segment>,
}

/// Parameters captured by a match, in pattern order.
pub type Params = Vec<(String, String)>;

impl PathPattern {
    /// Parses a pattern; the error says what is wrong with it.
    pub fn parse(source: &str) -> Result<Self, String> {
        if !source.starts_with('/') {
            return Err(format!("\"{source}\" must start with /"));
        }
        let mut segments = Vec::new();
        let mut names: Vec<&str> = Vec::new();
        for seg in split_segments(source) {
            if seg.contains(['{', '}']) {
                let name = seg
                    .strip_prefix('{')
                    .and_then(|s| s.strip_suffix('}'))
                    .filter(|n| is_param_name(n))
                    .ok_or_else(|| {
                        format!("\"{source}\": segment \"{seg}\" must be a whole {{param}} of letters, digits, _ or -")
                    })?;
                if names.contains(&name) {
                    return Err(format!("\"{source}\": parameter {{{name}}} appears twice"));
                }
                names.push(name);
                segments.push(Segment::Param(name.to_string()));
            } else {
                segments.push(Segment::Literal(seg.to_string()));
            }
        }
        Ok(Self {
            source: source.to_string(),
            segments,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    pub fn params(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().filter_map(|s| match s {
            Segment::Param(p) => Some(p.as_str()),
            Segment::Literal(_) => None,
        })
    }

    /// How specific the pattern is: literal segments win over parameters.
    pub fn literal_count(&self) -> usize {
        self.segments
            .iter()
            .filter(|s| matches!(s, Segment::Literal(_)))
            .count()
    }

    /// Matches a request path (without query string).
    pub fn matches(&self, path: &str) -> Option<Params> {
        let mut params = Vec::new();
        let mut parts = split_segments(path);
        for seg in &self.segments {
            let part = parts.next()?;
            match seg {
                Segment::Literal(lit) if lit == part => {}
                Segment::Literal(_) => return None,
                Segment::Param(_) if part.is_empty() => return None,
                Segment::Param(name) => params.push((name.clone(), part.to_string())),
            }
        }
        if parts.next().is_some() {
            return None;
        }
        Some(params)
    }

    /// True when both patterns match exactly the same paths.
    pub fn same_shape(&self, other: &Self) -> bool {
        self.segments.len() == other.segments.len()
            && self
                .segments
                .iter()
                .zip(&other.segments)
                .all(|(a, b)| match (a, b) {
                    (Segment::Literal(x), Segment::Literal(y)) => x == y,
                    (Segment::Param(_), Segment::Param(_)) => true,
                    _ => false,
                })
    }
}

/// Segments after the leading slash; `/` alone has one empty segment.
fn split_segments(path: &str) -> std::str::Split<'_, char> {
    path.strip_prefix('/').unwrap_or(path).split('/')
}

fn is_param_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// A backend `url_pattern` with `{param}` placeholders taken from the endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlPattern {
    source: String,
}

impl UrlPattern {
    /// Parses a url_pattern, checking that every placeholder is a parameter of `endpoint`.
    pub fn parse(source: &str, endpoint: &PathPattern) -> Result<Self, String> {
        if !source.starts_with('/') {
            return Err(format!("\"{source}\" must start with /"));
        }
        let mut rest = source;
        while let Some(open) = rest.find('{') {
            let after = &rest[open + 1..];
            let close = after
                .find('}')
                .ok_or_else(|| format!("\"{source}\": unclosed {{"))?;
            let name = &after[..close];
            if !endpoint.params().any(|p| p == name) {
                return Err(format!(
                    "\"{source}\": {{{name}}} is not a parameter of endpoint \"{}\"",
                    endpoint.as_str()
                ));
            }
            rest = &after[close + 1..];
        }
        Ok(Self {
            source: source.to_string(),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Substitutes the captured parameters. A value that would change the structure of
    /// the upstream path (see [`param_value_ok`]) is refused with the parameter's name.
    pub fn render(&self, params: &Params) -> Result<String, ParamError> {
        let mut out = String::with_capacity(self.source.len() + 16);
        let mut rest = self.source.as_str();
        while let Some(open) = rest.find('{') {
            out.push_str(&rest[..open]);
            let after = &rest[open + 1..];
            let Some(close) = after.find('}') else {
                out.push_str(&rest[open..]);
                return Ok(out);
            };
            let name = &after[..close];
            if let Some((_, v)) = params.iter().find(|(n, _)| n == name) {
                if !param_value_ok(v, out.contains('?')) {
                    return Err(ParamError(name.to_string()));
                }
                out.push_str(v);
            }
            rest = &after[close + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }
}

/// A `{param}` value that would change the upstream path's structure (its name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamError(pub String);

impl fmt::Display for ParamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the path parameter {{{}}} may not contain a path separator, a dot segment or an \
             escape that makes one (/, \\, %2F, %5C, . or .., %2E%2E, %25)",
            self.0
        )
    }
}

/// Whether a captured segment may be copied into an upstream path as it is. The value is
/// one raw segment (it holds no `/`), but the backend decodes it: after one round of
/// percent-decoding it must hold no `/`, `\`, `%` (a second round), `?`, `#` or control
/// character, and must not be a dot segment (`.`, `..`, also before a `;` path parameter as
/// in `..;`). In the query part of a `url_pattern` (`in_query`), `&` and `=` would add
/// parameters and are refused too. A malformed escape (`%zz`) is refused.
pub fn param_value_ok(raw: &str, in_query: bool) -> bool {
    let Some(decoded) = percent_decode_strict(raw) else {
        return false;
    };
    let forbidden = |b: u8| {
        matches!(b, b'/' | b'\\' | b'%' | b'?' | b'#')
            || b < 0x20
            || b == 0x7f
            || (in_query && matches!(b, b'&' | b'='))
    };
    if decoded.iter().any(|&b| forbidden(b)) {
        return false;
    }
    let before_params = decoded.split(|&b| b == b';').next().unwrap_or_default();
    !matches!(before_params, b"." | b"..")
}

/// URL scheme of a backend host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

/// One backend host, from KrakenD's `host` list (`https://api.openai.com`, `http://10.0.0.1:8080`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostUrl {
    pub scheme: Scheme,
    pub host: String,
    pub port: u16,
}

impl HostUrl {
    /// `scheme://host[:port]`; without a scheme (`localhost:8080`, KrakenD's quick start),
    /// `http://` as KrakenD assumes. Host names may hold `_` (Docker service names such as
    /// `fake_api`, which KrakenD accepts).
    pub fn parse(url: &str) -> Result<Self, String> {
        let prefixed = |p: &str| {
            url.get(..p.len())
                .filter(|head| head.eq_ignore_ascii_case(p))
                .and_then(|_| url.get(p.len()..))
        };
        let (scheme, rest) = if let Some(r) = prefixed("https://") {
            (Scheme::Https, r)
        } else if let Some(r) = prefixed("http://") {
            (Scheme::Http, r)
        } else if url.contains("://") {
            return Err(format!(
                "\"{url}\" must start with http:// or https:// (or have no scheme: http://)"
            ));
        } else {
            (Scheme::Http, url)
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains('/') {
            return Err(format!(
                "\"{url}\" must be scheme://host[:port] only; put the path in url_pattern"
            ));
        }
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || rest.starts_with('[') => {
                let port = p
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| format!("\"{url}\": bad port \"{p}\""))?;
                (h, port)
            }
            _ => (
                rest,
                match scheme {
                    Scheme::Http => 80,
                    Scheme::Https => 443,
                },
            ),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty()
            || !host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'))
        {
            return Err(format!("\"{url}\": bad host name"));
        }
        Ok(Self {
            scheme,
            host: host.to_ascii_lowercase(),
            port,
        })
    }

    /// True for the scheme's default port (then `:authority` omits it).
    pub fn default_port(&self) -> bool {
        matches!(
            (self.scheme, self.port),
            (Scheme::Http, 80) | (Scheme::Https, 443)
        )
    }

    /// The `:authority` to send: host, plus `:port` when not the scheme's default.
    pub fn authority(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.default_port() {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }

    /// True when the host is an IP literal (a STATIC cluster), not a DNS name.
    pub fn is_ip(&self) -> bool {
        self.host.parse::<std::net::IpAddr>().is_ok()
    }
}

impl fmt::Display for HostUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
        };
        write!(f, "{scheme}://{}", self.authority())
    }
}

/// The header Envoy's route reads (`cluster_header`) to pick the upstream cluster.
pub const CLUSTER_HEADER: &str = "x-tollgate-cluster";

/// The Envoy cluster name for a backend's host list. Used by the filter (routing header)
/// and by the bootstrap generator (cluster definitions), so the two always agree.
/// Readable and deterministic: `tg_https_api.openai.com_443`; several hosts joined by `+`.
pub fn cluster_name(hosts: &[HostUrl]) -> String {
    let mut name = String::from("tg");
    for (i, h) in hosts.iter().enumerate() {
        name.push(if i == 0 { '_' } else { '+' });
        name.push_str(match h.scheme {
            Scheme::Http => "http_",
            Scheme::Https => "https_",
        });
        name.push_str(&h.host.replace(':', "."));
        name.push('_');
        name.push_str(&h.port.to_string());
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_literals_and_params() {
        let p = PathPattern::parse("/llm/{provider}/chat").unwrap();
        assert_eq!(
            p.matches("/llm/openai/chat"),
            Some(vec![("provider".into(), "openai".into())])
        );
        for miss in [
            "/llm/openai",
            "/llm/openai/chat/x",
            "/llm//chat",
            "/LLM/openai/chat",
            "/",
        ] {
            assert_eq!(p.matches(miss), None, "{miss}");
        }
        let root = PathPattern::parse("/").unwrap();
        assert_eq!(root.matches("/"), Some(vec![]));
        assert_eq!(root.matches("/a"), None);
    }

    #[test]
    fn trailing_slash_is_a_distinct_path() {
        let p = PathPattern::parse("/v1/models").unwrap();
        assert!(p.matches("/v1/models").is_some());
        assert!(p.matches("/v1/models/").is_none());
    }

    #[test]
    fn rejects_bad_patterns() {
        let cases = [
            ("llm", "\"llm\" must start with /"),
            (
                "/a/b{x}",
                "\"/a/b{x}\": segment \"b{x}\" must be a whole {param} of letters, digits, _ or -",
            ),
            (
                "/a/{}",
                "\"/a/{}\": segment \"{}\" must be a whole {param} of letters, digits, _ or -",
            ),
            ("/{a}/{a}", "\"/{a}/{a}\": parameter {a} appears twice"),
        ];
        for (src, msg) in cases {
            assert_eq!(PathPattern::parse(src).unwrap_err(), msg);
        }
    }

    #[test]
    fn url_pattern_substitutes_and_checks_params() {
        let ep = PathPattern::parse("/m/{model}/{op}").unwrap();
        let u = UrlPattern::parse("/v1/{model}:{op}", &ep).unwrap();
        let params = ep.matches("/m/gpt/gen").unwrap();
        assert_eq!(u.render(&params).unwrap(), "/v1/gpt:gen");
        assert_eq!(
            UrlPattern::parse("/v1/{nope}", &ep).unwrap_err(),
            "\"/v1/{nope}\": {nope} is not a parameter of endpoint \"/m/{model}/{op}\""
        );
        assert_eq!(
            UrlPattern::parse("/v1/{x", &ep).unwrap_err(),
            "\"/v1/{x\": unclosed {"
        );
        assert_eq!(
            UrlPattern::parse("v1", &ep).unwrap_err(),
            "\"v1\" must start with /"
        );
    }

    #[test]
    fn params_never_change_the_upstream_path() {
        let ep = PathPattern::parse("/store/{name}/meta").unwrap();
        let u = UrlPattern::parse("/store/{name}/meta?v={name}", &ep).unwrap();
        let render = |v: &str| u.render(&vec![("name".into(), v.into())]);
        for ok in [
            "abc",
            "a.b",
            "...",
            "a..b",
            ".hidden",
            "caf%C3%A9",
            "a;b",
            "x%20y",
            "%41",
        ] {
            assert_eq!(
                render(ok).unwrap(),
                format!("/store/{ok}/meta?v={ok}"),
                "{ok}"
            );
        }
        for bad in [
            "..",
            ".",
            "%2e%2e",
            "%2E%2E",
            ".%2e",
            "%2e",
            "..;",
            "..;x",
            "a%2Fb",
            "%2f",
            "a%5Cb",
            "a\\b",
            "%252e%252e",
            "%",
            "%2",
            "%zz",
            "a%00b",
            "a%0Ab",
            "a%3Fb",
            "a%23b",
            "a\u{7f}",
        ] {
            assert_eq!(render(bad), Err(ParamError("name".into())), "{bad}");
        }
        // In the query part `&` and `=` would add parameters; in the path they are data.
        assert!(param_value_ok("a&b=c", false));
        assert!(!param_value_ok("a&b=c", true));
        assert!(!param_value_ok("a%26b", true));
        assert_eq!(
            ParamError("name".into()).to_string(),
            "the path parameter {name} may not contain a path separator, a dot segment or an escape that makes one (/, \\, %2F, %5C, . or .., %2E%2E, %25)"
        );
    }

    #[test]
    fn same_shape_ignores_param_names() {
        let a = PathPattern::parse("/a/{x}").unwrap();
        assert!(a.same_shape(&PathPattern::parse("/a/{y}").unwrap()));
        assert!(!a.same_shape(&PathPattern::parse("/a/b").unwrap()));
    }

    #[test]
    fn host_urls() {
        let h = HostUrl::parse("https://API.OpenAI.com").unwrap();
        assert_eq!(
            (h.host.as_str(), h.port, h.authority()),
            ("api.openai.com", 443, "api.openai.com".into())
        );
        let h = HostUrl::parse("http://127.0.0.1:8081/").unwrap();
        assert_eq!((h.authority(), h.is_ip()), ("127.0.0.1:8081".into(), true));
        let h = HostUrl::parse("http://[::1]:9000").unwrap();
        assert_eq!(
            (h.host.as_str(), h.authority()),
            ("::1", "[::1]:9000".into())
        );
        // KrakenD's forms: no scheme is http (its AI quick start's `localhost:8080`), and
        // Docker service names with `_`.
        for (url, scheme, host, port, authority) in [
            (
                "localhost:8080",
                Scheme::Http,
                "localhost",
                8080,
                "localhost:8080",
            ),
            (
                "api.example.com",
                Scheme::Http,
                "api.example.com",
                80,
                "api.example.com",
            ),
            ("http://fake_api", Scheme::Http, "fake_api", 80, "fake_api"),
            (
                "mocked_apis:8091",
                Scheme::Http,
                "mocked_apis",
                8091,
                "mocked_apis:8091",
            ),
            ("HTTPS://My_Host", Scheme::Https, "my_host", 443, "my_host"),
        ] {
            let h = HostUrl::parse(url).unwrap();
            assert_eq!(
                (h.scheme, h.host.as_str(), h.port, h.authority()),
                (scheme, host, port, authority.to_string()),
                "{url}"
            );
        }
        for (bad, msg) in [
            ("amqp://blah", "\"amqp://blah\" must start with http:// or https:// (or have no scheme: http://)"),
            ("api.openai.com/v1", "\"api.openai.com/v1\" must be scheme://host[:port] only; put the path in url_pattern"),
            ("localhost:http", "\"localhost:http\": bad port \"http\""),
            ("", "\"\": bad host name"),
            ("https://x.com/v1", "\"https://x.com/v1\" must be scheme://host[:port] only; put the path in url_pattern"),
            ("http://x:0", "\"http://x:0\": bad port \"0\""),
            ("http://x:99999", "\"http://x:99999\": bad port \"99999\""),
            ("http://", "\"http://\": bad host name"),
            ("http://a b", "\"http://a b\": bad host name"),
        ] {
            assert_eq!(HostUrl::parse(bad).unwrap_err(), msg);
        }
    }

    #[test]
    fn cluster_names_are_stable_and_distinct() {
        let a = HostUrl::parse("https://api.openai.com").unwrap();
        let b = HostUrl::parse("http://127.0.0.1:8081").unwrap();
        assert_eq!(
            cluster_name(std::slice::from_ref(&a)),
            "tg_https_api.openai.com_443"
        );
        assert_eq!(
            cluster_name(&[a.clone(), b.clone()]),
            "tg_https_api.openai.com_443+http_127.0.0.1_8081"
        );
        assert_ne!(cluster_name(&[a.clone(), b.clone()]), cluster_name(&[b, a]));
    }
}

/// Why no endpoint matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Miss {
    /// No endpoint has this path.
    NotFound,
    /// The path exists for these other methods.
    MethodNotAllowed(Vec<String>),
}

/// Finds the endpoint for a request: the most specific pattern (most literal segments)
/// among those with the request's method. Returns its index and the captured params.
pub fn find<'a, I>(endpoints: I, method: &str, path: &str) -> Result<(usize, Params), Miss>
where
    I: IntoIterator<Item = (&'a PathPattern, &'a str)>,
{
    let mut best: Option<(usize, usize, Params)> = None;
    let mut allowed: Vec<String> = Vec::new();
    for (i, (pattern, m)) in endpoints.into_iter().enumerate() {
        let Some(params) = pattern.matches(path) else {
            continue;
        };
        if m != method {
            if !allowed.iter().any(|a| a == m) {
                allowed.push(m.to_string());
            }
            continue;
        }
        let score = pattern.literal_count();
        if best.as_ref().is_none_or(|(_, s, _)| score > *s) {
            best = Some((i, score, params));
        }
    }
    match best {
        Some((i, _, params)) => Ok((i, params)),
        None if allowed.is_empty() => Err(Miss::NotFound),
        None => Err(Miss::MethodNotAllowed(allowed)),
    }
}

#[cfg(test)]
mod find_tests {
    use super::*;

    #[test]
    fn most_specific_match_wins_and_methods_are_reported() {
        let pats: Vec<(PathPattern, &str)> = vec![
            (PathPattern::parse("/v1/{x}").unwrap(), "POST"),
            (PathPattern::parse("/v1/models").unwrap(), "GET"),
            (PathPattern::parse("/v1/{x}").unwrap(), "GET"),
        ];
        let it = || pats.iter().map(|(p, m)| (p, *m));
        assert_eq!(find(it(), "GET", "/v1/models").unwrap().0, 1);
        assert_eq!(
            find(it(), "GET", "/v1/other").unwrap(),
            (2, vec![("x".into(), "other".into())])
        );
        assert_eq!(find(it(), "POST", "/v1/models").unwrap().0, 0);
        assert_eq!(
            find(it(), "DELETE", "/v1/a"),
            Err(Miss::MethodNotAllowed(vec!["POST".into(), "GET".into()]))
        );
        assert_eq!(find(it(), "GET", "/v2"), Err(Miss::NotFound));
    }
}
