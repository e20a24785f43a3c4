//! Every template KrakenD publishes for its body generators (tests/fixtures/krakend_templates,
//! sources in its SOURCES.md) renders to the expected body for one sample request; then the
//! language's edges, the refusals and hostile inputs.

use super::*;
use serde_json::{json, Value as Json};

fn fixture(name: &str) -> String {
    let path = format!(
        "{}/tests/fixtures/krakend_templates/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The request every table case renders: a client body with each field KrakenD's examples
/// read (text with quotes and HTML characters, to see toJson escape them), headers as KrakenD
/// gives them, sequential-proxy params, ai/llm variables.
fn request() -> Json {
    json!({
        "req_body": {
            "content": "Tell me a \"joke\" <b>&</b>",
            "text": "Hello",
            "contents": "Tell me a consultant joke",
            "message": "123456789 is a number that should never be sent",
            "email": "ana@example.com",
            "documents": [{"text": "doc one"}, {"text": "doc two"}]
        },
        "req_headers": {"X-Name": ["Ana"], "X-Locale": ["es-ES"], "X-Position": ["developer"]},
        "req_params": {
            "User": "42",
            "Username": "ana",
            "Resp0_contents": "hi there",
            "Resp0_user_data.user_id": "7",
            "Resp0": "{\"embeddings\":[{\"values\":[0.1,0.2]},{\"values\":[0.3]}],\"embedding\":{\"values\":[0.5,0.25]}}",
            "Resp1": "{\"data\":{\"Get\":{\"Document\":[{\"text\":\"ctx A\"},{\"text\":\"ctx B\"}]}}}"
        },
        "variables": {"extra_payload": {"seed": 7}}
    })
}

fn response(resp_body: Json) -> Json {
    json!({ "resp_body": resp_body })
}

fn render(name: &str, data: &Json) -> String {
    let t = Template::compile(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    t.render(data).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn render_json(name: &str, data: &Json) -> Json {
    let out = render(name, data);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{name}: not JSON ({e}):\n{out}"))
}

#[test]
fn krakend_templates_render() {
    let req = request();
    let content = "Tell me a \"joke\" <b>&</b>";
    let user =
        |model: &str| json!({"model": model, "messages": [{"role": "user", "content": content}]});
    let cases: Vec<(&str, Json)> = vec![
        (
            "doc-v2.10-unified-llm-google.tmpl",
            json!({"contents": [{"parts": [{"text": content}]}]}),
        ),
        ("doc-v2.10-unified-llm-chatgpt.tmpl", user("gpt-4o")),
        ("doc-v2.10-unified-llm-mistral.tmpl", user("mistral-medium")),
        ("doc-v2.10-unified-llm-deepseek.tmpl", user("deepseek-chat")),
        (
            "doc-v2.10-unified-llm-llama.tmpl",
            user("meta-llama-3-70b-instruct"),
        ),
        (
            "doc-v2.10-unified-llm-anthropic.tmpl",
            json!({"model": "claude-3-sonnet-20240229", "max_tokens": 1024,
            "temperature": 0.7, "messages": [{"role": "user", "content": content}]}),
        ),
        (
            "doc-v2.10-unified-llm-cohere.tmpl",
            json!({"model": "command-r-plus", "chat_history": [],
            "message": content, "temperature": 0.5}),
        ),
        (
            "ee-v2.10-prompt-templates-gemini.tmpl",
            json!({"contents": [{"parts": [{"text": "Hello"}]}]}),
        ),
        (
            "doc-ai-gateway-security-body_mask.tmpl",
            json!({"message": "XXX-6789 is a number that should never be sent"}),
        ),
        (
            "doc-body-generator-sample.json.tmpl",
            json!({"update": {"user_id": "42", "email": "ana@example.com"}}),
        ),
        (
            "llm-pre-2.11-generate.request.gemini.tmpl",
            json!({
            "system_instruction": {"parts": [{"text": "Your name is GarsIA. The user name is Ana, always start a response presenting yourself and with a hearty greeting. User locale is es-ES, regardless the language of the input, the responses must be always written in the language of the locale"}]},
            "contents": [{"parts": [{"text": "Tell me a consultant joke"}]}]}),
        ),
        (
            "llm-pre-2.11-generate.request.openai.tmpl",
            json!({"model": "gpt-4.1-mini",
            "instructions": "Your name is GarsIA. The user name is Ana, always start a response presenting yourself and with a hearty greeting. User locale is es-ES, regardless the language of the input, the responses must be always written in the language of the locale",
            "input": "Tell me a consultant joke"}),
        ),
        (
            "rag-embed.request.gemini.tmpl",
            json!({"model": "models/text-embedding-004",
            "content": {"parts": [{"text": content}], "role": "user"}}),
        ),
        (
            "rag-batch-embed.request.gemini.tmpl",
            json!({"model": "models/text-embedding-004", "requests": [
            {"model": "models/text-embedding-004", "content": {"parts": [{"text": "doc one"}], "role": "user"}},
            {"model": "models/text-embedding-004", "content": {"parts": [{"text": "doc two"}], "role": "user"}}]}),
        ),
        (
            "rag-add-document.request.weaviate.tmpl",
            json!({"fields": ["ALL"], "objects": [
            {"class": "Document", "properties": {"text": "doc one"}, "vector": [0.1, 0.2]},
            {"class": "Document", "properties": {"text": "doc two"}, "vector": [0.3]}]}),
        ),
        (
            "rag-query.weaviate.tmpl",
            json!({"query": "{Get {Document (nearVector:{vector: [0.5,0.25] }, limit: 10) { text }}}"}),
        ),
        (
            "playground-gemini_from_params.tmpl",
            json!({"contents": [{"parts": [{"text": "hi there"}]}], "generationConfig": {"candidateCount": 1}}),
        ),
    ];
    for (name, want) in &cases {
        assert_eq!(&render_json(name, &req), want, "{name}");
    }
    // The RAG prompt: `printf "%s\\n%s"` joins the context with a backslash-n, which the
    // JSON string then reads as a line break.
    let rag = render_json("rag-generate-rag.request.gemini.tmpl", &req);
    let system = rag["system_instruction"]["parts"][0]["text"]
        .as_str()
        .unwrap();
    assert!(system.ends_with("Context:\n\nctx A\nctx B"), "{system:?}");
    assert_eq!(rag["contents"], json!([{"parts": [{"text": content}]}]));
    // toJson escapes like Go's json.Marshal.
    assert!(render("doc-v2.10-unified-llm-google.tmpl", &req)
        .contains(r#""Tell me a \"joke\" \u003cb\u003e\u0026\u003c/b\u003e""#));
    // KrakenD's published OpenAI prompt template lacks a `}`: it renders, but not to JSON.
    let broken = render("ee-v2.10-prompt-templates-openai.tmpl", &req);
    assert!(
        broken.contains(r#""content": "Hello" },"#)
            && serde_json::from_str::<Json>(&broken).is_err()
    );
    // Form bodies of the multiple-post example.
    assert_eq!(
        render("multiple-post-users_post_body.tmpl", &req),
        "username=ana&static_param=static_value\n"
    );
    assert_eq!(
        render("multiple-post-reviews_post_body.tmpl", &req),
        "user_id=7&static_param=static_value\n"
    );
}

#[test]
fn krakend_response_templates_render() {
    let gemini = response(
        json!({"candidates": [{"content": {"parts": [{"text": "Hi"}, {"text": "there"}]}}],
                                 "usageMetadata": {"totalTokenCount": 42}}),
    );
    let want = json!({"ai_gateway_response": [{"contents": ["Hi", "there"]}], "usage": "42"});
    assert_eq!(
        render_json("llm-pre-2.11-generate.response.gemini.tmpl", &gemini),
        want
    );
    assert_eq!(
        render_json("rag-generate.response.gemini.tmpl", &gemini),
        want
    );
    let none = response(json!({"candidates": [], "usageMetadata": {"totalTokenCount": 3}}));
    assert_eq!(
        render_json("llm-pre-2.11-generate.response.gemini.tmpl", &none),
        json!({"ai_gateway_response": [], "usage": "3"})
    );
    let openai = response(
        json!({"output": [{"content": [{"type": "output_text", "text": "Yo"}]}],
                                 "usage": {"total_tokens": 12}}),
    );
    assert_eq!(
        render_json("llm-pre-2.11-generate.response.openai.tmpl", &openai),
        json!({"ai_gateway_response": [{"contents": ["Yo"]}], "usage": "12"})
    );
    let weaviate = response(json!({"collection": [1, 2, 3]}));
    assert_eq!(
        render_json("rag-add-document.response.weaviate.tmpl", &weaviate),
        json!({"added": 3})
    );
}

#[test]
fn data_fields_lists_what_the_template_reads() {
    let t = Template::compile(&fixture("llm-pre-2.11-generate.request.gemini.tmpl")).unwrap();
    assert_eq!(
        t.data_fields().collect::<Vec<_>>(),
        ["req_headers", "req_body"]
    );
    let t = Template::compile(&fixture("rag-batch-embed.request.gemini.tmpl")).unwrap();
    assert_eq!(t.data_fields().collect::<Vec<_>>(), ["req_body"]);
    let t = Template::compile("{{ range .req_body.items }}{{ .name }}{{ end }}{{ $.variables.x }}")
        .unwrap();
    assert_eq!(
        t.data_fields().collect::<Vec<_>>(),
        ["req_body", "variables"]
    );
}

fn run(src: &str, data: &Json) -> Result<String, String> {
    let t = Template::compile(src).map_err(|e| format!("compile: {e}"))?;
    t.render(data).map_err(|e| e.to_string())
}

#[test]
fn language_table() {
    let d = json!({"s": "x", "n": 3, "f": 1.5, "z": 0, "e": "", "l": [1, "two", {"k": true}], "m": {"b": 2, "a": 1},
                   "nul": null, "t": true, "deep": {"a": {"b": "c"}}});
    let ok = |src: &str, want: &str| assert_eq!(run(src, &d).as_deref(), Ok(want), "{src}");
    ok("a {{ .s }} b", "a x b");
    ok("a  {{- .s -}}  b", "axb");
    ok("a\n {{- /* note */ -}} \nb", "ab");
    ok("{{/* only a comment */}}", "");
    ok("{{ .missing }}", "<no value>");
    ok("{{ .nul }}", "<no value>");
    ok("{{ .l }} {{ .m }}", "[1 two map[k:true]] map[a:1 b:2]");
    ok("{{ .deep.a.b }}{{ $.deep.a.b }}", "cc");
    ok("{{ .n }} {{ .f }} {{ .t }}", "3 1.5 true");
    ok("{{ if .t }}yes{{ end }}", "yes");
    ok(
        "{{ if .z }}a{{ else if .e }}b{{ else if .s }}c{{ else }}d{{ end }}",
        "c",
    );
    ok("{{ if .nul }}a{{ else }}b{{ end }}", "b");
    ok("{{ range .l }}[{{ . }}]{{ end }}", "[1][two][map[k:true]]");
    ok(
        "{{ range $i, $v := .l }}{{ if $i }},{{ end }}{{ $i }}={{ $v }}{{ end }}",
        "0=1,1=two,2=map[k:true]",
    );
    ok("{{ range $k, $v := .m }}{{ $k }}{{ $v }}{{ end }}", "a1b2");
    ok("{{ range .missing }}x{{ else }}empty{{ end }}", "empty");
    ok("{{ range .e2 }}x{{ end }}", "");
    ok(
        "{{ $x := 1 }}{{ range .l }}{{ $x = . }}{{ end }}{{ $x }}",
        "map[k:true]",
    );
    ok(
        "{{ $x := .s }}{{ if .t }}{{ $x := \"inner\" }}{{ $x }}{{ end }}{{ $x }}",
        "innerx",
    );
    ok("{{ .s | printf \"%s-%s\" \"a\" }}", "a-x");
    ok(
        "{{ printf \"%d%%\" .n }} {{ printf \"%d\" .s }} {{ printf \"%s\" }} {{ printf \"x\" 1 }}",
        "3% %!d(string=x) %!s(MISSING) x%!(EXTRA number=1)",
    );
    ok("{{ print 1 2 \"a\" 3 \"b\" \"c\" }}", "1 2a3bc");
    ok(
        "{{ len .s }} {{ len .l }} {{ len .m }} {{ len \"héllo\" }}",
        "1 3 2 6",
    );
    ok(
        "{{ index .l 1 }} {{ index .m \"a\" }} {{ index .m \"zz\" }} {{ index .l 2 \"k\" }}",
        "two 1 <no value> true",
    );
    ok("{{ dig \"deep\" \"a\" \"b\" \"def\" $ }} {{ dig \"deep\" \"x\" \"def\" $ }} {{ dig \"nul\" \"def\" $ }}", "c def <no value>");
    ok(
        "{{ toJson .m }} {{ toJson .missing }} {{ .l | toJson }}",
        r#"{"a":1,"b":2} null [1,"two",{"k":true}]"#,
    );
    ok(
        "{{ (\"{\\\"a\\\": [1, 2]}\" | fromJson).a }} {{ fromJson \"nope\" }}",
        "[1 2] <no value>",
    );
    ok("{{ eq .n 3 }} {{ eq .s \"y\" \"x\" }} {{ ne .s \"x\" }} {{ lt 1 2 }} {{ ge .f 1.5 }} {{ gt \"b\" \"a\" }}", "true true false true true true");
    ok(
        "{{ and .t .s }} {{ and .z .s }} {{ or .e .s }} {{ or .z .e }} {{ not .e }}",
        "x 0 x  true",
    );
    ok(
        "{{ regexReplaceAll \"a(x*)b\" \"-ab-axxb-\" \"${1}W\" }}",
        "-W-xxW-",
    );
    ok("{{ regexReplaceAll \"[0-9]\" \"a1b22\" \"\" }}", "ab");
    ok(
        "{{ `raw \\n` }}{{ \"\\x41\\u00e9\\101\\t\" }}",
        "raw \\nAéA\t",
    );
    ok(
        "{{ 0x10 }} {{ -2 }} {{ 1.5e3 }} {{ 1e21 }}",
        "16 -2 1500 1e+21",
    );
}

#[test]
fn render_errors() {
    let d = json!({"s": "x", "l": [1], "m": {}, "nul": null});
    let bad = |src: &str, want: &str| {
        let got = run(src, &d);
        assert!(matches!(&got, Err(m) if m.contains(want)), "{src}: {got:?}");
    };
    bad("{{ .missing.x }}", "nil pointer evaluating .x");
    bad("{{ .s.x }}", "can't evaluate field x in type string");
    bad("{{ index .l 5 }}", "index out of range");
    bad("{{ index .l \"a\" }}", "list index must be an integer");
    bad("{{ index .missing 0 }}", "index of untyped nil");
    bad("{{ index .m 1 }}", "map key must be a string");
    bad("{{ len .missing }}", "len of nil");
    bad("{{ range .s }}{{ end }}", "range can't iterate over string");
    bad(
        "{{ dig \"a\" \"def\" .missing }}",
        "last argument must be a map",
    );
    bad("{{ lt .s 1 }}", "incompatible types");
    bad("{{ fromJson .l }}", "expected string");
    bad("{{ regexReplaceAll \"a\" .l \"b\" }}", "must be strings");
    // Positions: line and column of the action.
    let e = run("line one\n  {{ .s.x }}", &d).unwrap_err();
    assert!(e.starts_with("line 2 column 6:"), "{e}");
}

#[test]
fn refused_constructs_name_themselves() {
    let refused = |src: &str, want: &str, line: usize, col: usize| {
        let e = Template::compile(src)
            .err()
            .unwrap_or_else(|| panic!("{src}: accepted"));
        assert!(e.message.contains(want), "{src}: {e}");
        assert_eq!((e.line, e.col), (line, col), "{src}: {e}");
    };
    refused("{{ with .x }}{{ end }}", "{{with}} is not supported", 1, 1);
    refused(
        "a\n{{ define \"x\" }}{{ end }}",
        "{{define}} is not supported",
        2,
        1,
    );
    refused(
        "{{ template \"x\" }}",
        "{{template}} is not supported",
        1,
        1,
    );
    refused(
        "{{ block \"x\" . }}{{ end }}",
        "{{block}} is not supported",
        1,
        1,
    );
    refused(
        "{{ range .l }}{{ break }}{{ end }}",
        "{{break}} is not supported",
        1,
        15,
    );
    refused(
        "{{ .s | upper }}",
        "function \"upper\" is not supported",
        1,
        9,
    );
    refused(
        "{{ b64enc .s }}",
        "function \"b64enc\" is not supported",
        1,
        4,
    );
    refused(
        "{{ env \"HOME\" }}",
        "function \"env\" is not supported",
        1,
        4,
    );
    refused("{{ $x }}", "undefined variable $x", 1, 4);
    refused("{{ $x = 1 }}", "undefined variable $x", 1, 4);
    refused(
        "{{ if 1 }}{{ $y := 1 }}{{ end }}{{ $y }}",
        "undefined variable $y",
        1,
        36,
    );
    refused("{{ printf .s 1 }}", "string literal format", 1, 4);
    refused("{{ printf \"%5.2f\" 1 }}", "verb %5 is not supported", 1, 4);
    refused(
        "{{ regexReplaceAll .s \"a\" \"b\" }}",
        "string literal pattern",
        1,
        4,
    );
    refused(
        "{{ regexReplaceAll \"(\" \"a\" \"b\" }}",
        "bad regular expression",
        1,
        4,
    );
    refused(
        "{{ toJson }}",
        "wrong number of arguments for toJson: want 1, got 0",
        1,
        4,
    );
    refused("{{ .s | toJson 1 }}", "want 1, got 2", 1, 9);
    refused("{{ .s 1 }}", "only a function can take arguments", 1, 4);
    refused("{{ 1 | .s }}", "only a function can take arguments", 1, 8);
    refused("{{ if .s }}", "{{if}} without {{end}}", 1, 1);
    refused("{{ end }}", "unexpected {{end}}", 1, 10);
    refused("{{ else }}", "unexpected {{else}}", 1, 1);
    refused("{{ .s ", "unclosed action", 1, 1);
    refused("{{/* x ", "unclosed comment", 1, 1);
    refused("{{ 'a' }}", "character constants", 1, 4);
    refused("{{ \"abc }}", "unterminated string", 1, 4);
    refused("{{ (.s }}", "unclosed '('", 1, 4);
    refused("{{ }}", "missing value for command", 1, 1);
    refused("{{ .s ; }}", "unexpected ';'", 1, 7);
    refused(
        "{{ range $i, $v := .l }}{{ else if .x }}{{ end }}",
        "{{else if}} inside {{range}}",
        1,
        25,
    );
}

#[test]
fn hostile_templates_and_data_are_bounded() {
    // Nesting: refused at compile time.
    let deep_if = "{{ if 1 }}".repeat(100) + &"{{ end }}".repeat(100);
    assert!(Template::compile(&deep_if)
        .unwrap_err()
        .message
        .contains("nested too deeply"));
    let deep_paren = format!("{{{{ {}1{} }}}}", "(".repeat(100), ")".repeat(100));
    assert!(Template::compile(&deep_paren).is_err());
    assert!(Template::compile(&"x".repeat(MAX_TEMPLATE_LEN + 1)).is_err());
    // Output: a loop over large data stops at the limit.
    let t = Template::compile("{{ range .l }}{{ $.big }}{{ end }}").unwrap();
    let data = json!({"l": vec![0; 100], "big": "x".repeat(10_000)});
    let e = t.render_limited(&data, 100_000).unwrap_err();
    assert!(e.message.contains("output larger than 100000 bytes"), "{e}");
    assert_eq!(
        t.render_limited(&data, 1_000_000).map(|s| s.len()),
        Ok(1_000_000)
    );
    // Work: a string grown in a loop without output stops at the limit too.
    let t =
        Template::compile("{{ $x := .s }}{{ range .l }}{{ $x = printf \"%s%s\" $x $x }}{{ end }}")
            .unwrap();
    let e = t
        .render_limited(&json!({"s": "ab", "l": vec![0; 64]}), 1 << 20)
        .unwrap_err();
    assert!(e.message.contains("larger than"), "{e}");
    // Nested loops: the step budget stops them.
    let t = Template::compile(
        "{{ range .l }}{{ range $.l }}{{ range $.l }}{{ end }}{{ end }}{{ end }}",
    )
    .unwrap();
    let e = t.render(&json!({"l": vec![0; 200]})).unwrap_err();
    assert!(e.message.contains("step limit"), "{e}");
    // regexReplaceAll that would multiply its input.
    let t = Template::compile("{{ regexReplaceAll \"\" .s .r }}").unwrap();
    let e = t
        .render_limited(
            &json!({"s": "x".repeat(1000), "r": "y".repeat(1000)}),
            100_000,
        )
        .unwrap_err();
    assert!(e.message.contains("larger than"), "{e}");
}
