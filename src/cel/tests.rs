//! Every CEL expression found in KrakenD's documentation and published configurations
//! (tests/krakend_corpus, the krakend.io pages read for issue 13), each with its source, run
//! against one sample request; then the language's edges and hostile inputs.

use super::*;
use serde_json::{json, Value as Json};

/// The sample request every table case runs against.
struct Sample {
    jwt: Json,
    resp: Json,
    headers: Vec<(String, String)>,
    query: Vec<(String, String)>,
    params: Vec<(String, String)>,
    now: String,
}

/// 2024-01-15 was a Monday.
const MONDAY: &str = "2024-01-15T09:30:00Z";
const SUNDAY: &str = "2024-01-14T09:30:00Z";

fn sample() -> Sample {
    let h = |k: &str, v: &str| (canonical_header_key(k), v.to_string());
    Sample {
        jwt: json!({"user_id": "u-1", "enabled_days": [1, 2, 3, 4, 5], "role": "admin",
                    "department": "IT", "permissions": {"can_write_users": false}}),
        resp: json!({"github": {"company": "KrakenD", "login": "kd"}, "label": "BENIGN",
                     "sequence2": {"message": "pong"}}),
        headers: vec![
            h("x-user-id", "42"),
            h("x-llm", "gemini"),
            h("x-role", "reader,moderator"),
            h("x-position", "developer"),
            h("x-geoip", r#"{"Country":{"IsoCode":"ES"},"IsoCode":"ES"}"#),
            h("x-forwarded-for", "::1"),
            h("x-header", "something"),
            h("cookie", "GDPR=yes; ab-test-xyz=1"),
        ],
        query: vec![
            ("foo".into(), "bar".into()),
            ("foo[]".into(), "bar".into()),
            ("user".into(), "123".into()),
        ],
        params: vec![
            (param_key("nick"), "kate".into()),
            (param_key("id"), "30".into()),
            ("Resp0_message".into(), "hello".into()),
            ("Resp0_label".into(), "BENIGN".into()),
        ],
        now: MONDAY.into(),
    }
}

fn activation(s: &Sample) -> Activation<'_> {
    let mut a = Activation::new();
    a.bind("req_method", Value::str("POST"))
        .bind("req_path", Value::str("/cel"))
        .bind(
            "req_headers",
            Value::string_lists(s.headers.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
        )
        .bind(
            "req_querystring",
            Value::string_lists(s.query.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
        )
        .bind(
            "req_params",
            Value::string_map(s.params.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
        )
        .bind("resp_completed", Value::Bool(true))
        .bind("resp_metadata_status", Value::Int(200))
        .bind(
            "resp_metadata_headers",
            Value::string_lists([("Content-Type", "application/json")]),
        )
        .bind("resp_data", Value::from_json(&s.resp))
        .bind("JWT", Value::from_json(&s.jwt))
        .bind("now", Value::str(&s.now))
        .bind("value", Value::str("free-tier"));
    a
}

/// (source, scope, expression, expected verdict on the sample).
const KRAKEND: &[(&str, Scope, &str, bool)] = &[
    ("docs endpoints/common-expression-language-cel.md (intro)", Scope::Validation,
     "'::1' in req_headers['X-Forwarded-For']", true),
    ("corpus doc-endpoints-common-expression-language-cel-L139/L314", Scope::Validation,
     "has(JWT.user_id) && has(JWT.enabled_days) && (timestamp(now).getDayOfWeek() in JWT.enabled_days)", true),
    ("corpus doc-endpoints-common-expression-language-cel-L161", Scope::Validation,
     "size(req_headers['X-User-Id']) == 1", true),
    ("corpus doc-endpoints-common-expression-language-cel-L209", Scope::Validation,
     "req_params.Nick.matches('k.*')", true),
    ("corpus doc-endpoints-common-expression-language-cel-L231", Scope::Validation,
     "'company' in resp_data.github", true),
    ("corpus doc-endpoints-common-expression-language-cel-L297", Scope::Validation,
     "(timestamp(now).getDayOfWeek() + 6) % 7 <= 4", true),
    ("corpus doc-endpoints-common-expression-language-cel-L331 backend[1]", Scope::Validation,
     "has(req_params.Resp0_message)", true),
    ("corpus doc-endpoints-common-expression-language-cel-L331 backend[2]", Scope::Validation,
     "resp_data.sequence2.message == 'pong'", true),
    ("corpus doc-endpoints-common-expression-language-cel-L331 backend[3]", Scope::Validation,
     "has(req_querystring.foo)", true),
    ("corpus doc-endpoints-common-expression-language-cel-L331 backend[4]", Scope::Validation,
     "has(req_params.NEVER_CALLED_BACKEND)", false),
    ("corpus doc-v2-10-ai-gateway-unified-llm-interface-L49 (security/policies req)", Scope::Request,
     "req_headers['X-Llm'][0] in ['gemini','openai']", true),
    ("corpus ee-backend-conditional (backend/conditional policy)", Scope::Request,
     "req_headers.containsCookie('ab-test-xyz', '1')", true),
    ("corpus ex-governance (quota tier_value_as policy)", Scope::QuotaTier, "value.matches('.*')", true),
    ("corpus ex-governance (quota tier_value_as policy)", Scope::QuotaTier, "value.matches('free.*')", true),
    ("corpus pge-ep-fake-api-geofence / pge-krakend", Scope::Validation,
     r#"req_headers['X-Geoip'][0].matches('"IsoCode":"ES"')"#, true),
    ("corpus pge-ep-llm-conditional (backend/conditional policy)", Scope::Request,
     "req_headers['X-Role'][0].contains('moderator')", true),
    ("corpus pge-ep-prompt-guardrail-intelligent (backend/conditional policy)", Scope::Request,
     "req_params['Resp0_label'] == 'BENIGN'", true),
    ("corpus pge-ep-prompt-guardrail-intelligent (security/policies resp)", Scope::Response,
     "resp_data.label == 'BENIGN'", true),
    ("corpus pge-ep-track-user (security/policies req)", Scope::Request, "getCookie('GDPR') == 'yes'", true),
    ("corpus schema-all (security/policies req/resp)", Scope::Request, "true", true),
    ("corpus schema-all (security/policies jwt)", Scope::Jwt, "has(JWT.user_id)", true),
    ("corpus schema-all (validation/cel)", Scope::Validation, "int(req_params.Id) % 3 == 0", true),
    ("corpus schema-all (validation/cel)", Scope::Validation, "int(req_params.Id) % 5 == 0", true),
    ("corpus schema-all (validation/cel)", Scope::Validation, "'something' in req_headers['X-Header']", true),
    ("corpus schema-all (validation/cel)", Scope::Validation, "int(req_params.Id) % 2 == 0", true),
    ("corpus ex-ai-gateway-llm.tmpl (backend/conditional policy)", Scope::Request,
     "req_headers['X-Position'][0] == 'developer'", true),
    ("corpus ex-ai-gateway-llm.tmpl (backend/conditional policy)", Scope::Request,
     "req_headers['X-Position'][0] == 'support'", false),
    ("krakend.io security-policies/ (what is a policy)", Scope::Jwt,
     r#"has(JWT.department) && JWT.department in ["marketing", "sales"]"#, false),
    ("krakend.io security-policies/playbook (RBAC)", Scope::Jwt,
     "JWT.role in ['admin', 'root'] || JWT.permissions.can_write_users", true),
    ("krakend.io security-policies/playbook (ABAC)", Scope::Jwt, "JWT.department in ['IT','HR']", true),
    ("krakend.io security-policies/playbook (maintenance window)", Scope::Request,
     "timestamp(now)< timestamp('2023-01-01T10:00:20.000-05:00') || timestamp(now)> timestamp('2023-01-01T12:00:20.000-05:00')", true),
    ("krakend.io security-policies/playbook (endpoint lifecycle)", Scope::Request,
     "timestamp(now) > timestamp('2023-01-01T10:00:20.000-05:00')", true),
    ("krakend.io security-policies/playbook (query string)", Scope::Request,
     "req_querystring.user.exists(u,u.matches('[0-9]+'))", true),
    ("krakend.io security-policies/playbook (query string)", Scope::Request, "hasQuerystring('user')", true),
    ("krakend.io security-policies/advanced-policy-macros (between)", Scope::Request, "between(2,5,7)", false),
    ("krakend.io security-policies/advanced-policy-macros (between)", Scope::Request, "between(2,2,2)", true),
    ("krakend.io security-policies/advanced-policy-macros (between)", Scope::Request, "2.between(1,3)", true),
    ("krakend.io security-policies/advanced-policy-macros (between)", Scope::Request, "2.between(4,5)", false),
    ("krakend.io security-policies/advanced-policy-macros (between)", Scope::Request, "2.0.between(1.9,2.1)", true),
];

/// KrakenD expressions tollgate refuses at configuration: (source, expression, what the
/// error must say, offset it must point at).
const REFUSED: &[(&str, &str, &str, usize)] = &[
    // cel-go refuses it too ("invalid argument to has() macro"): has() takes a field selection.
    (
        "corpus doc-endpoints-common-expression-language-cel-L268",
        "has(req_querystring['foo[]']) && 'bar' in req_querystring['foo[]']",
        "has() takes one field selection",
        0,
    ),
    (
        "corpus doc-endpoints-common-expression-language-cel-L69 (placeholders)",
        "CONDITION1 && CONDITION2",
        "unknown variable 'CONDITION1'",
        0,
    ),
    (
        "corpus schema-backend-conditional-3",
        "geoIP().RepresentedCountry.IsInEuropeanUnion",
        "geoIP() is not supported: needs KrakenD's GeoIP database",
        0,
    ),
    (
        "krakend.io security-policies/playbook (country)",
        "geoIP().Country.IsoCode in ['US','FR']",
        "geoIP() is not supported",
        0,
    ),
];

#[test]
fn krakend_expressions_compile_and_evaluate() {
    let s = sample();
    let act = activation(&s);
    for (source, scope, expr, want) in KRAKEND {
        let p =
            Program::compile_for(expr, *scope).unwrap_or_else(|e| panic!("{source}: {expr}: {e}"));
        let got = p.eval(&act);
        assert_eq!(p.check(&act), *want, "{source}: {expr} gave {got:?}");
    }
}

#[test]
fn krakend_expressions_refused_name_the_construct() {
    for (source, expr, msg, pos) in REFUSED {
        let e = Program::compile_for(expr, Scope::Validation)
            .err()
            .unwrap_or_else(|| panic!("{source}: accepted"));
        assert!(e.message.contains(msg), "{source}: {e}");
        assert_eq!(e.pos, *pos, "{source}: {e}");
    }
}

#[test]
fn day_of_week_follows_now() {
    let mut s = sample();
    s.now = SUNDAY.into();
    let act = activation(&s);
    for expr in [
        "(timestamp(now).getDayOfWeek() + 6) % 7 <= 4",
        "has(JWT.user_id) && has(JWT.enabled_days) && (timestamp(now).getDayOfWeek() in JWT.enabled_days)",
    ] {
        assert!(!Program::compile(expr).unwrap().check(&act), "{expr} on a Sunday");
    }
}

#[test]
fn verdicts_change_with_the_request() {
    // The same expressions on a request that must fail them: no table case passes vacuously.
    let mut s = sample();
    s.headers = vec![
        (canonical_header_key("x-user-id"), "1".into()),
        (canonical_header_key("x-user-id"), "2".into()),
        (canonical_header_key("x-llm"), "claude".into()),
        (canonical_header_key("x-role"), "reader".into()),
        (
            canonical_header_key("cookie"),
            "GDPR=no; ab-test-xyz=2".into(),
        ),
    ];
    s.params = vec![
        (param_key("nick"), "bob".into()),
        (param_key("id"), "7".into()),
    ];
    s.query.clear();
    s.resp = json!({"github": {"login": "kd"}, "label": "INJECTION"});
    let act = activation(&s);
    for expr in [
        "size(req_headers['X-User-Id']) == 1",
        "req_headers['X-Llm'][0] in ['gemini','openai']",
        "req_headers['X-Role'][0].contains('moderator')",
        "req_headers.containsCookie('ab-test-xyz', '1')",
        "getCookie('GDPR') == 'yes'",
        "req_params.Nick.matches('k.*')",
        "'company' in resp_data.github",
        "resp_data.label == 'BENIGN'",
        "int(req_params.Id) % 2 == 0",
        "hasQuerystring('user')",
        // A missing header is an error, and an error rejects.
        "req_headers['X-Geoip'][0].matches('ES')",
    ] {
        assert!(!Program::compile(expr).unwrap().check(&act), "{expr}");
    }
    assert_eq!(eval_str("getCookie('absent')", &act), "");
}

fn eval_str(expr: &str, act: &Activation<'_>) -> String {
    match Program::compile(expr).unwrap().eval(act).unwrap() {
        Value::Str(s) => s.as_str().to_string(),
        other => panic!("{expr}: {other:?}"),
    }
}

fn eval(expr: &str) -> Result<String, String> {
    let p = Program::compile(expr).map_err(|e| format!("compile: {e}"))?;
    let s = sample();
    let act = activation(&s);
    p.eval(&act)
        .map(|v| format!("{}:{v}", v.type_name()))
        .map_err(|e| e.message)
}

#[test]
fn language_table() {
    let ok = |expr: &str, want: &str| assert_eq!(eval(expr), Ok(want.to_string()), "{expr}");
    // precedence and associativity
    ok("1 + 2 * 3", "int:7");
    ok("(1 + 2) * 3", "int:9");
    ok("10 - 4 - 3", "int:3");
    ok("7 / 2", "int:3");
    ok("-7 % 3", "int:-1");
    ok("7.0 / 2.0", "double:3.5");
    ok("true || false && false", "bool:true");
    ok("!true == false", "bool:true");
    ok("1 < 2 == true", "bool:true");
    ok("true ? 1 : 2", "int:1");
    ok("false ? 1 : true ? 2 : 3", "int:2");
    ok("--5", "int:5");
    ok("-9223372036854775808", "int:-9223372036854775808");
    ok("0x1F + 1", "int:32");
    ok("3u * 2u", "uint:6");
    ok("1e3", "double:1000");
    ok(".5 + 1.0", "double:1.5");
    // strings and escapes
    ok(r#"'a' + "b" + '''c'd''' + """e"f""""#, "string:abc'de\"f");
    ok(r"'\x41\u00e9\101\n' == 'AéA\n'", "bool:true");
    ok(r"r'\d+' == '\\d+'", "bool:true");
    ok("'héllo'.size()", "int:5");
    ok(
        "'abc'.startsWith('ab') && 'abc'.endsWith('bc') && 'abc'.contains('b')",
        "bool:true",
    );
    ok(
        "'MiXeD'.lowerAscii() + 'MiXeD'.upperAscii()",
        "string:mixedMIXED",
    );
    // numbers across types
    ok("1 == 1.0", "bool:true");
    ok("1u == 1", "bool:true");
    ok("2 < 2.5", "bool:true");
    ok("9007199254740993 > 9007199254740992.0", "bool:true");
    ok("JWT.enabled_days[0] == 1", "bool:true");
    // lists, maps, in
    ok("[1, 2, 3][1]", "int:2");
    ok("size([1, 2] + [3])", "int:3");
    ok("{'a': 1, 'b': [true]}.b[0]", "bool:true");
    ok("'a' in {'a': 1}", "bool:true");
    ok("3 in [1, 2]", "bool:false");
    ok("[1, [2]] == [1, [2]]", "bool:true");
    ok("{'a': 1} == {'a': 1.0}", "bool:true");
    ok("null == null", "bool:true");
    ok("'x' == 1", "bool:false");
    // conversions
    ok("int('42') + int(2.9) + int(-2.9)", "int:42");
    ok("uint('7')", "uint:7");
    ok("double('2.5')", "double:2.5");
    ok(
        "string(42) + string(1.5) + string(true)",
        "string:421.5true",
    );
    ok("bool('true')", "bool:true");
    ok(
        "string(timestamp('2023-01-01T10:00:20.000-05:00'))",
        "string:2023-01-01T15:00:20Z",
    );
    ok(
        "timestamp('2024-01-01T00:00:00Z') + duration('36h') > timestamp('2024-01-02T00:00:00Z')",
        "bool:true",
    );
    ok(
        "string(timestamp('2024-01-02T00:00:00Z') - timestamp('2024-01-01T00:00:00Z'))",
        "string:86400s",
    );
    ok("duration('1h30m').getMinutes()", "int:90");
    ok("timestamp(now).getFullYear()", "int:2024");
    ok("int(timestamp('1970-01-01T00:01:00Z'))", "int:60");
    // macros
    ok("[1, 2, 3].all(x, x > 0)", "bool:true");
    ok("[1, 2, 3].exists(x, x > 2)", "bool:true");
    ok("[1, 2, 3].exists_one(x, x > 1)", "bool:false");
    ok("{'a': 1, 'b': 2}.all(k, k.size() == 1)", "bool:true");
    ok("[[1], [2]].exists(x, x.exists(y, y == 2))", "bool:true");
    ok("[1, 2].exists(req_method, req_method == 2)", "bool:true");
    // errors absorbed by && and ||, as cel-spec says
    ok("false && req_headers['Missing'][0] == 'x'", "bool:false");
    ok("req_headers['Missing'][0] == 'x' && false", "bool:false");
    ok("req_headers['Missing'][0] == 'x' || true", "bool:true");
    ok("[0, 1].exists(x, 1 / x == 1)", "bool:true");
    // request variables
    ok("req_method + ' ' + req_path", "string:POST /cel");
    ok("resp_metadata_status == 200 && resp_completed", "bool:true");
    ok(
        "resp_metadata_headers['Content-Type'][0]",
        "string:application/json",
    );
    ok("size(req_querystring)", "int:3");
}

#[test]
fn evaluation_errors() {
    let bad = |expr: &str, want: &str| {
        let got = eval(expr);
        assert!(
            matches!(&got, Err(m) if m.contains(want)),
            "{expr}: {got:?}"
        );
    };
    bad("9223372036854775807 + 1", "integer overflow");
    bad("-9223372036854775808 - 1", "integer overflow");
    bad("-(-9223372036854775808)", "integer overflow");
    bad("-9223372036854775808 / -1", "integer overflow");
    bad("-9223372036854775808 % -1", "integer overflow");
    bad("9223372036854775807 * 2", "integer overflow");
    bad("0u - 1u", "unsigned integer overflow");
    bad("1 / 0", "division by zero");
    bad("1 % 0", "modulus by zero");
    bad("1 + 1.0", "no such overload");
    bad("'a' < 1", "no such overload");
    bad("[1][5]", "index out of range");
    bad("[1][-1]", "index out of range");
    bad("req_headers['X-Nope']", "no such key");
    bad("JWT.nope", "no such key: 'nope'");
    bad("req_method.x", "has no field");
    bad("int('x')", "not an integer");
    bad("int(1e300)", "out of range");
    bad("uint(-1)", "negative");
    bad("timestamp('yesterday')", "RFC 3339");
    bad(
        "timestamp('9999-12-31T23:59:59Z') + duration('1s')",
        "out of range",
    );
    bad("duration('1y')", "duration like");
    bad("1 ? 2 : 3", "must be a bool");
    bad("!1", "no such overload");
    bad("size(1)", "no such overload");
    bad("{'a': 1, 'a': 2}", "repeated map key");
    bad("[1, 2].all(x, x)", "must be a bool");
}

#[test]
fn compile_errors_name_the_position() {
    let refused = |expr: &str, want: &str, pos: usize| {
        let e = Program::compile(expr)
            .err()
            .unwrap_or_else(|| panic!("{expr}: accepted"));
        assert!(e.message.contains(want), "{expr}: {e}");
        assert_eq!(e.pos, pos, "{expr}: {e}");
    };
    refused("", "empty", 0);
    refused("1 +", "unexpected end", 3);
    refused("(1", "expected ')'", 2);
    refused("req_method ==", "unexpected end", 13);
    refused("req_method = 'GET'", "unexpected character '='", 11);
    refused("'abc", "unterminated", 0);
    refused("'a\\qb'", "invalid escape", 2);
    refused("b'abc'", "bytes literals", 0);
    refused("18446744073709551616", "out of range", 0);
    refused("9223372036854775808", "out of range", 0);
    refused("1 + if", "reserved word", 4);
    refused("size(1, 2)", "takes 1 argument", 0);
    refused("req_method.foo()", "unknown method .foo()", 10);
    refused("frobnicate(1)", "unknown function frobnicate()", 0);
    refused("req_method.matches(req_path)", "string literal pattern", 19);
    refused("req_method.matches('(')", "bad regular expression", 19);
    refused("timestamp(now).getHours('Europe/Madrid')", "time zone", 14);
    refused("[1].exists(1, true)", "simple name", 11);
    refused("has(req_method)", "has() takes one field selection", 0);
    refused("{1: 2}", "string literals", 1);
    refused("Msg{a: 1}", "message construction", 0);
    refused("[1].map(x, x)", "map() macro is not supported", 3);
    refused("req_method 'x'", "unexpected a string", 11);
    refused("nobody", "unknown variable 'nobody'", 0);
    // Scopes: a response variable in a request policy, the tier value elsewhere.
    let e = Program::compile_for("resp_data.x == 1", Scope::Request).unwrap_err();
    assert!(
        e.message.contains("unknown variable 'resp_data'") && e.message.contains("req_headers"),
        "{e}"
    );
    assert!(Program::compile_for("value == 'x'", Scope::Request).is_err());
    assert!(Program::compile_for("req_method == 'x'", Scope::QuotaTier).is_err());
    assert!(Program::compile_for("JWT.a == 1", Scope::Response).is_err());
}

#[test]
fn phases_follow_the_variables_read() {
    let p = Program::compile("req_method == 'GET' && now != ''").unwrap();
    assert!(p.reads_request() && !p.reads_response() && !p.reads_jwt());
    let p = Program::compile("resp_data.a == 1").unwrap();
    assert!(!p.reads_request() && p.reads_response());
    let p = Program::compile("has(JWT.sub)").unwrap();
    assert!(p.reads_jwt() && !p.reads_request());
    let p = Program::compile("getCookie('a') == 'b'").unwrap();
    assert!(p.reads_request());
    assert_eq!(p.variables().collect::<Vec<_>>(), ["req_headers"]);
    let p = Program::compile("[1].exists(x, x == 1)").unwrap();
    assert_eq!(p.variables().count(), 0);
}

#[test]
fn hostile_expressions_are_bounded() {
    // Nesting: refused at compile time, never a stack overflow.
    for expr in [
        "(".repeat(10_000) + "1" + &")".repeat(10_000),
        "!".repeat(10_000) + "true",
        "-".repeat(10_000) + "1",
        "[".repeat(10_000),
        "1".to_string() + &" + 1".repeat(1_000),
        "req_method".to_string() + &".x".repeat(1_000),
        "a".to_string() + &"[0]".repeat(1_000),
        "true".to_string() + &" && true".repeat(1_000),
        "x".repeat(MAX_EXPR_LEN + 1),
    ] {
        assert!(Program::compile(&expr).is_err(), "{}", &expr[..20]);
    }
    // Cost: nested macros over lists would be 10^8 steps; the budget stops them.
    let e = eval("[0,1,2,3,4,5,6,7,8,9].all(a, [0,1,2,3,4,5,6,7,8,9].all(b, [0,1,2,3,4,5,6,7,8,9].all(c, \
                  [0,1,2,3,4,5,6,7,8,9].all(d, [0,1,2,3,4,5,6,7,8,9].all(e, a + b + c + d + e >= 0)))))")
        .unwrap_err();
    assert!(e.contains("cost limit"), "{e}");
    // The cost limit is not absorbed by || (it would let an expensive expression pass).
    let e = eval(
        "[0,1,2,3,4,5,6,7,8,9].all(a, [0,1,2,3,4,5,6,7,8,9].all(b, [0,1,2,3,4,5,6,7,8,9].all(c, \
                  [0,1,2,3,4,5,6,7,8,9].all(d, [0,1,2,3,4,5,6,7,8,9].all(e, 1/0 == 1))))) || true",
    );
    assert!(matches!(&e, Err(m) if m.contains("cost limit")), "{e:?}");
}

#[test]
fn built_strings_are_capped() {
    let big = "x".repeat(MAX_STRING / 2 + 1);
    let mut act = Activation::new();
    act.bind("req_path", Value::str(&big));
    let p = Program::compile("size(req_path + req_path) > 0").unwrap();
    let e = p.eval(&act).unwrap_err();
    assert!(e.message.contains("string longer than"), "{e}");
    let p = Program::compile("size(req_path + 'x') > 0").unwrap();
    assert!(p.check(&act));
}
