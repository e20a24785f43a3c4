#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use super::*;
use crate::providers::{test_target, AwsCredentials, Defaults};

fn parse(v: Value) -> EmbeddingRequest {
    parse_request(v.to_string().as_bytes()).unwrap()
}

fn body(o: &Outgoing) -> Value {
    serde_json::from_slice(&o.body).unwrap()
}

#[test]
fn requests_parse_in_every_input_shape() {
    let r = parse(json!({"model": "m", "input": "one"}));
    assert_eq!(r.input, EmbeddingInput::Texts(vec!["one".into()]));
    assert_eq!(r.encoding_format, EncodingFormat::Float);
    let r = parse(json!({"model": "m", "input": ["a", "b"], "dimensions": 256,
                         "encoding_format": "base64", "user": "u", "input_type": "search_query"}));
    assert_eq!(r.input.len(), 2);
    assert_eq!(
        (r.dimensions, r.encoding_format, r.input_type.as_deref()),
        (Some(256), EncodingFormat::Base64, Some("search_query"))
    );
    assert_eq!(
        parse(json!({"model": "m", "input": [1, 2, 3]})).input,
        EmbeddingInput::Tokens(vec![vec![1, 2, 3]])
    );
    assert_eq!(
        parse(json!({"model": "m", "input": [[1], [2, 3]]})).input,
        EmbeddingInput::Tokens(vec![vec![1], vec![2, 3]])
    );
}

#[test]
fn malformed_requests_name_the_field() {
    let cases: &[(Value, &str)] = &[
        (json!({"input": "x"}), "model: missing required field"),
        (json!({"model": "m"}), "input: missing required field"),
        (json!({"model": "m", "input": []}), "input: must contain at least one input"),
        (json!({"model": "m", "input": ["a", ""]}), "input[1]: must not be empty"),
        (json!({"model": "m", "input": ["a", 5]}), "input[1]: expected a string, got a number"),
        (json!({"model": "m", "input": [[1], []]}), "input[1]: must not be empty"),
        (json!({"model": "m", "input": [[1, -2]]}), "input[0][1]: expected a token id (a non-negative integer)"),
        (json!({"model": "m", "input": {"a": 1}}), "input: expected a string, an array of strings or token arrays, got an object"),
        (json!({"model": "m", "input": "x", "dimensions": 0}), "dimensions: must be at least 1"),
        (json!({"model": "m", "input": "x", "encoding_format": "int8"}), "encoding_format: unknown encoding format \"int8\" (expected float or base64)"),
        (json!({"model": "m", "input": "x", "input_type": "chat"}), "input_type: unknown input type \"chat\" (expected search_document, search_query, classification, clustering)"),
    ];
    for (b, want) in cases {
        assert_eq!(
            parse_request(b.to_string().as_bytes()).unwrap_err().message,
            *want,
            "{b}"
        );
    }
    let many: Vec<String> = (0..2049).map(|i| i.to_string()).collect();
    let e = parse_request(json!({"model": "m", "input": many}).to_string().as_bytes()).unwrap_err();
    assert!(e.message.starts_with("input: 2049 inputs"), "{}", e.message);
}

#[test]
fn openai_compatible_azure_and_mistral_bodies() {
    let d = Defaults::default();
    let r = parse(
        json!({"model": "alias", "input": ["a", "b"], "dimensions": 64,
                         "encoding_format": "base64", "user": "u"}),
    );
    let o = encode_request(
        &r,
        &test_target(Wire::OpenAi, "text-embedding-3-small", &d),
        false,
    )
    .unwrap();
    assert_eq!(o.path, "/v1/embeddings");
    assert_eq!(
        body(&o),
        json!({"model": "text-embedding-3-small", "input": ["a", "b"], "dimensions": 64,
               "encoding_format": "float", "user": "u"})
    );
    let mut t = test_target(Wire::Azure, "embed-dep", &d);
    t.api_version = Some("2024-10-21");
    let o = encode_request(&r, &t, false).unwrap();
    assert_eq!(
        o.path,
        "/openai/deployments/embed-dep/embeddings?api-version=2024-10-21"
    );
    let o = encode_request(&r, &test_target(Wire::OpenAi, "mistral-embed", &d), true).unwrap();
    assert_eq!(
        body(&o),
        json!({"model": "mistral-embed", "input": ["a", "b"], "output_dimension": 64,
               "encoding_format": "float"})
    );
    let tokens = parse(json!({"model": "m", "input": [1, 2]}));
    assert!(encode_request(&tokens, &test_target(Wire::OpenAi, "m", &d), true).is_err());
    assert!(encode_request(&tokens, &test_target(Wire::OpenAi, "m", &d), false).is_ok());
}

#[test]
fn gemini_single_and_batch() {
    let d = Defaults::default();
    let one = parse(
        json!({"model": "g", "input": "hello", "dimensions": 768, "input_type": "search_document"}),
    );
    let o = encode_request(
        &one,
        &test_target(Wire::Gemini, "gemini-embedding-001", &d),
        false,
    )
    .unwrap();
    assert_eq!(o.path, "/v1beta/models/gemini-embedding-001:embedContent");
    assert_eq!(
        body(&o),
        json!({"content": {"parts": [{"text": "hello"}]}, "taskType": "RETRIEVAL_DOCUMENT",
               "outputDimensionality": 768})
    );
    let two = parse(json!({"model": "g", "input": ["a", "b"]}));
    let o = encode_request(
        &two,
        &test_target(Wire::Gemini, "models/text-embedding-004", &d),
        false,
    )
    .unwrap();
    assert_eq!(
        o.path,
        "/v1beta/models/text-embedding-004:batchEmbedContents"
    );
    assert_eq!(
        body(&o)["requests"][1],
        json!({"model": "models/text-embedding-004", "content": {"parts": [{"text": "b"}]}})
    );
    // Answers: the shapes of Gemini's API reference.
    let r = decode_response(
        Wire::Gemini,
        "g",
        200,
        br#"{"embedding": {"values": [0.013168523, -0.008711934, -0.046782676]}}"#,
        None,
    )
    .unwrap();
    assert_eq!(
        r.vectors,
        vec![vec![0.013168523f32, -0.008711934, -0.046782676]]
    );
    assert_eq!(
        r.prompt_tokens, None,
        "Gemini reports no tokens: the gateway estimates"
    );
    let r = decode_response(
        Wire::Gemini,
        "g",
        200,
        br#"{"embeddings": [{"values": [0.1, 0.2]}, {"values": [0.3, 0.4]}]}"#,
        None,
    )
    .unwrap();
    assert_eq!(r.vectors.len(), 2);
    check_count(&two, &r).unwrap();
    assert!(check_count(&one, &r).is_err());
}

#[test]
fn bedrock_titan_and_cohere_are_signed_invoke_calls() {
    let d = Defaults::default();
    let creds = AwsCredentials {
        access_key_id: "AKIDEXAMPLE".into(),
        secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
        session_token: None,
        region: "us-east-1".into(),
    };
    let mut t = test_target(Wire::Bedrock, "amazon.titan-embed-text-v2:0", &d);
    t.aws = Some(&creds);
    let one = parse(json!({"model": "t", "input": "hello", "dimensions": 512}));
    let o = encode_request(&one, &t, false).unwrap();
    assert_eq!(o.path, "/model/amazon.titan-embed-text-v2%3A0/invoke");
    assert_eq!(
        body(&o),
        json!({"inputText": "hello", "normalize": true, "dimensions": 512})
    );
    assert!(o
        .headers
        .iter()
        .any(|(k, v)| k == "authorization" && v.starts_with("AWS4-HMAC-SHA256 ")));
    let two = parse(json!({"model": "t", "input": ["a", "b"]}));
    let e = encode_request(&two, &t, false).unwrap_err();
    assert!(
        e.0.starts_with("input: Titan embeds one text per call, got 2"),
        "{}",
        e.0
    );
    let odd = parse(json!({"model": "t", "input": "a", "dimensions": 100}));
    assert!(encode_request(&odd, &t, false)
        .unwrap_err()
        .0
        .starts_with("dimensions:"));
    // Titan's answer (Bedrock user guide shape) and its token count.
    let r = decode_response(Wire::Bedrock, t.model, 200,
        br#"{"embedding": [0.1, -0.2], "embeddingsByType": {"float": [0.1, -0.2]}, "inputTextTokenCount": 6}"#,
        None).unwrap();
    assert_eq!((r.vectors.len(), r.prompt_tokens), (1, Some(6)));

    let c = test_target(Wire::Bedrock, "cohere.embed-multilingual-v3", &d);
    let o = encode_request(&two, &c, false).unwrap();
    assert_eq!(
        body(&o),
        json!({"texts": ["a", "b"], "input_type": "search_document", "embedding_types": ["float"]})
    );
    assert!(encode_request(&odd, &c, false)
        .unwrap_err()
        .0
        .starts_with("dimensions:"));
    let v4 = test_target(Wire::Bedrock, "us.cohere.embed-v4:0", &d);
    let dims = parse(
        json!({"model": "c", "input": ["a"], "dimensions": 256, "input_type": "search_query"}),
    );
    let b = body(&encode_request(&dims, &v4, false).unwrap());
    assert_eq!(
        (b["output_dimension"].clone(), b["input_type"].clone()),
        (json!(256), json!("search_query"))
    );
    for answer in [
        r#"{"id": "x", "response_type": "embeddings_by_type", "embeddings": {"float": [[0.1], [0.2]]}, "texts": ["a", "b"]}"#,
        r#"{"id": "x", "response_type": "embeddings_floats", "embeddings": [[0.1], [0.2]], "texts": ["a", "b"]}"#,
    ] {
        let r = decode_response(Wire::Bedrock, c.model, 200, answer.as_bytes(), Some(4)).unwrap();
        assert_eq!(
            (r.vectors, r.prompt_tokens),
            (vec![vec![0.1f32], vec![0.2]], Some(4))
        );
    }
    let e = encode_request(
        &one,
        &test_target(Wire::Bedrock, "meta.llama3-70b", &d),
        false,
    )
    .unwrap_err();
    assert!(
        e.0.starts_with("model: Bedrock embeddings are supported for Titan"),
        "{}",
        e.0
    );
}

#[test]
fn anthropic_has_no_embeddings() {
    let d = Defaults::default();
    let e = encode_request(
        &parse(json!({"model": "m", "input": "x"})),
        &test_target(Wire::Anthropic, "claude", &d),
        false,
    )
    .unwrap_err();
    assert!(
        e.0.contains("Anthropic offers no embeddings API"),
        "{}",
        e.0
    );
}

#[test]
fn answers_in_float_and_base64() {
    // OpenAI's answer (API reference shape), vectors out of order, one as base64.
    let b64 = base64_encode(
        &[0.5f32, -1.0]
            .iter()
            .flat_map(|f| f.to_le_bytes())
            .collect::<Vec<u8>>(),
    );
    let answer = json!({"object": "list", "model": "text-embedding-3-small",
        "data": [{"object": "embedding", "index": 1, "embedding": b64},
                 {"object": "embedding", "index": 0, "embedding": [0.0023064255, -0.009327292]}],
        "usage": {"prompt_tokens": 8, "total_tokens": 8}});
    let r = decode_response(Wire::OpenAi, "m", 200, answer.to_string().as_bytes(), None).unwrap();
    assert_eq!(
        r.vectors,
        vec![vec![0.0023064255f32, -0.009327292], vec![0.5, -1.0]]
    );
    assert_eq!(r.prompt_tokens, Some(8));
    let v: Value =
        serde_json::from_slice(&encode_response(&r, "alias", EncodingFormat::Float, 8)).unwrap();
    assert_eq!(
        v["data"][0]["embedding"],
        json!([0.0023064255f32, -0.009327292f32])
    );
    assert_eq!(v["model"], "alias");
    assert_eq!(v["usage"], json!({"prompt_tokens": 8, "total_tokens": 8}));
    // Base64 of little-endian float32, as the SDK decodes it (numpy.frombuffer(..., float32)).
    let v: Value =
        serde_json::from_slice(&encode_response(&r, "alias", EncodingFormat::Base64, 8)).unwrap();
    let bytes = base64_decode(v["data"][1]["embedding"].as_str().unwrap()).unwrap();
    assert_eq!(
        bytes,
        [0.5f32, -1.0]
            .iter()
            .flat_map(|f| f.to_le_bytes())
            .collect::<Vec<u8>>()
    );
    // Provider errors keep their provider's vocabulary; broken answers are 502s.
    let e = decode_response(Wire::OpenAi, "m", 400,
        br#"{"error": {"message": "This model's maximum context length is 8192 tokens", "type": "invalid_request_error", "param": null, "code": null}}"#,
        None).unwrap_err();
    assert_eq!((e.status, e.kind.as_str()), (400, "invalid_request_error"));
    for bad in [
        &b"{}"[..],
        b"[",
        br#"{"data": [{"embedding": ["x"]}]}"#,
        br#"{"data": [{"embedding": "@@"}]}"#,
    ] {
        assert_eq!(
            decode_response(Wire::OpenAi, "m", 200, bad, None)
                .unwrap_err()
                .status,
            502
        );
    }
}
