//! Request scan and rewrite tests, built from the bodies in OpenAI's API reference
//! (https://platform.openai.com/docs/api-reference/chat/create and
//! https://platform.openai.com/docs/api-reference/embeddings/create).

use super::*;
use proptest::prelude::*;

const CHAT: &str = r#"{
    "model": "gpt-4o",
    "messages": [
      {
        "role": "developer",
        "content": "You are a helpful assistant."
      },
      {
        "role": "user",
        "content": "Hello!"
      }
    ]
  }"#;

const CHAT_STREAM: &str = r#"{
    "model": "gpt-4o",
    "messages": [
      {
        "role": "developer",
        "content": "You are a helpful assistant."
      },
      {
        "role": "user",
        "content": "Hello!"
      }
    ],
    "stream": true,
    "stream_options": {"include_usage": true}
  }"#;

const EMBEDDINGS: &str = r#"{
    "input": ["The food was delicious and the waiter...", "Second input"],
    "model": "text-embedding-ada-002",
    "encoding_format": "float"
  }"#;

fn scan(body: &str) -> Result<RequestFacts, ScanError> {
    Scanner::new().scan(body.as_bytes())
}

fn model_of(bytes: &[u8]) -> simd_json::OwnedValue {
    let mut copy = bytes.to_vec();
    let value = simd_json::to_owned_value(&mut copy).unwrap();
    value["model"].clone()
}

#[test]
fn chat_example() {
    let facts = scan(CHAT).unwrap();
    let model = facts.model.clone().unwrap();
    assert_eq!(model.name, "gpt-4o");
    assert_eq!(&CHAT[model.raw_span.unwrap()], "gpt-4o");
    assert!(!facts.stream);
    assert_eq!(facts.include_usage, None);
    assert_eq!(facts.max_tokens, None);
}

#[test]
fn streaming_example() {
    let facts = scan(CHAT_STREAM).unwrap();
    assert_eq!(facts.model.unwrap().name, "gpt-4o");
    assert!(facts.stream);
    assert_eq!(facts.include_usage, Some(true));
}

#[test]
fn embeddings_example() {
    let facts = scan(EMBEDDINGS).unwrap();
    let model = facts.model.unwrap();
    assert_eq!(model.name, "text-embedding-ada-002");
    assert_eq!(&EMBEDDINGS[model.raw_span.unwrap()], "text-embedding-ada-002");
    assert!(!facts.stream);
}

#[test]
fn max_tokens_and_its_newer_name() {
    assert_eq!(scan(r#"{"max_tokens": 256}"#).unwrap().max_tokens, Some(256));
    assert_eq!(scan(r#"{"max_completion_tokens": 512}"#).unwrap().max_tokens, Some(512));
    assert_eq!(scan(r#"{"max_tokens": 1, "max_completion_tokens": 2}"#).unwrap().max_tokens, Some(1));
    assert_eq!(scan(r#"{"max_tokens": null, "max_completion_tokens": 2}"#).unwrap().max_tokens, Some(2));
    assert_eq!(scan(r#"{"max_tokens": 100.0}"#).unwrap().max_tokens, Some(100));
}

#[test]
fn nulls_mean_absent() {
    let facts = scan(r#"{"model":"m","stream":null,"stream_options":null,"max_tokens":null}"#).unwrap();
    assert!(!facts.stream);
    assert_eq!(facts.include_usage, None);
    assert_eq!(facts.max_tokens, None);
    let facts = scan(r#"{"stream":false,"stream_options":{"include_usage":null}}"#).unwrap();
    assert!(!facts.stream);
    assert_eq!(facts.include_usage, None);
    assert_eq!(scan(r#"{"stream_options":{"include_usage":false}}"#).unwrap().include_usage, Some(false));
}

#[test]
fn duplicate_keys_last_one_wins() {
    let body = r#"{"model":"first","stream":false,"model":"second","stream":true}"#;
    let facts = scan(body).unwrap();
    let model = facts.model.clone().unwrap();
    assert_eq!(model.name, "second");
    assert_eq!(&body[model.raw_span.unwrap()], "second");
    assert!(facts.stream);
    let out = rewrite_model(body.as_bytes(), &facts, "third").unwrap();
    assert_eq!(&out[..], br#"{"model":"first","stream":false,"model":"third","stream":true}"#);
}

#[test]
fn nested_keys_are_not_top_level_keys() {
    let body = r#"{"model":"top","metadata":{"model":"nested","stream":true},"messages":[{"stream":"x"}]}"#;
    let facts = scan(body).unwrap();
    assert_eq!(facts.model.unwrap().name, "top");
    assert!(!facts.stream);
}

#[test]
fn error_messages_are_for_the_client() {
    let error = scan(r#"{"model":"a",}"#).unwrap_err();
    assert!(error.to_string().len() > "We could not parse the JSON body of your request: ".len());
    assert_eq!(ScanError::NotAnObject.to_string(), "The body of your request must be a JSON object.");
    assert_eq!(
        scan("").unwrap_err().to_string(),
        "We could not parse the JSON body of your request: the body is empty"
    );
}

#[test]
fn escaped_model_has_no_span_and_rewrite_reserializes() {
    let body =
        r#"{"model": "gpt\u002d4o \"mini\"", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.5}"#;
    let facts = scan(body).unwrap();
    let model = facts.model.clone().unwrap();
    assert_eq!(model.name, "gpt-4o \"mini\"");
    assert_eq!(model.raw_span, None);

    let out = rewrite_model(body.as_bytes(), &facts, "provider/model-\"x\"").unwrap();
    let mut copy = out.to_vec();
    let value = simd_json::to_owned_value(&mut copy).unwrap();
    assert_eq!(value["model"], "provider/model-\"x\"");
    assert_eq!(value["messages"][0]["content"], "hi");
    assert_eq!(value["temperature"], 0.5);
    let rescanned = Scanner::new().scan(&out).unwrap();
    assert_eq!(rescanned.model.unwrap().name, "provider/model-\"x\"");
}

#[test]
fn rewrite_with_span_leaves_every_other_byte_identical() {
    let new_model = "azure/gpt-4o-2024-08-06";
    let facts = scan(CHAT_STREAM).unwrap();
    let span = facts.model.clone().unwrap().raw_span.unwrap();
    let out = rewrite_model(CHAT_STREAM.as_bytes(), &facts, new_model).unwrap();
    let body = CHAT_STREAM.as_bytes();
    assert_eq!(&out[..span.start], &body[..span.start]);
    assert_eq!(&out[span.start..span.start + new_model.len()], new_model.as_bytes());
    assert_eq!(&out[span.start + new_model.len()..], &body[span.end..]);
    assert_eq!(model_of(&out), new_model);
}

#[test]
fn rewrite_escapes_the_new_name() {
    let facts = scan(CHAT).unwrap();
    let weird = "a\"b\\c\nd\u{1}é";
    let out = rewrite_model(CHAT.as_bytes(), &facts, weird).unwrap();
    assert_eq!(model_of(&out), weird);
    let rescanned = Scanner::new().scan(&out).unwrap();
    assert_eq!(rescanned.model.unwrap().name, weird);
}

#[test]
fn missing_model_is_inserted() {
    let facts = scan(r#"{"messages":[]}"#).unwrap();
    assert_eq!(facts.model, None);
    let out = rewrite_model(br#"{"messages":[]}"#, &facts, "m").unwrap();
    assert_eq!(&out[..], br#"{"model":"m","messages":[]}"#);

    let facts = scan(" {} ").unwrap();
    let out = rewrite_model(b" {} ", &facts, "m").unwrap();
    assert_eq!(&out[..], br#" {"model":"m"} "#);
    assert_eq!(Scanner::new().scan(&out).unwrap().model.unwrap().name, "m");
}

#[test]
fn empty_model_string_has_an_empty_span() {
    let body = r#"{"model":""}"#;
    let facts = scan(body).unwrap();
    let model = facts.model.clone().unwrap();
    assert_eq!(model.name, "");
    assert_eq!(model.raw_span, Some(10..10));
    let out = rewrite_model(body.as_bytes(), &facts, "m").unwrap();
    assert_eq!(&out[..], br#"{"model":"m"}"#);
}

#[test]
fn wrong_types() {
    let cases = [
        (r#"{"model": 4}"#, "model", "a string"),
        (r#"{"model": null}"#, "model", "a string"),
        (r#"{"model": ["gpt-4o"]}"#, "model", "a string"),
        (r#"{"stream": "true"}"#, "stream", "a boolean"),
        (r#"{"stream": 1}"#, "stream", "a boolean"),
        (r#"{"stream_options": true}"#, "stream_options", "an object"),
        (r#"{"stream_options": []}"#, "stream_options", "an object"),
        (r#"{"stream_options": {"include_usage": "yes"}}"#, "stream_options.include_usage", "a boolean"),
        (r#"{"max_tokens": -1}"#, "max_tokens", "a non-negative integer"),
        (r#"{"max_tokens": 1.5}"#, "max_tokens", "a non-negative integer"),
        (r#"{"max_tokens": "10"}"#, "max_tokens", "a non-negative integer"),
        (r#"{"max_completion_tokens": -3}"#, "max_completion_tokens", "a non-negative integer"),
    ];
    for (body, field, expected) in cases {
        assert_eq!(scan(body), Err(ScanError::WrongType { field, expected }), "{body}");
    }
    assert_eq!(scan(r#"{"model": 4}"#).unwrap_err().to_string(), "'model' must be a string");
}

#[test]
fn not_an_object() {
    for body in ["[]", r#"[{"model":"m"}]"#, "\"gpt-4o\"", "42", "null", "true"] {
        assert_eq!(scan(body), Err(ScanError::NotAnObject), "{body}");
    }
    assert_eq!(ScanError::NotAnObject.label(), "not_an_object");
}

#[test]
fn invalid_json() {
    let bodies: [&[u8]; 12] = [
        b"",
        b"   \n\t ",
        br#"{"model":"gpt-4o""#,
        br#"{"model":"gpt-4o","messages":[{"role":"user""#,
        br#"{"model":"a"} garbage"#,
        br#"{"model":"a"}{}"#,
        br#"{"model":"a",}"#,
        b"{\"model\":\"\xff\xfe\"}",
        b"{\"model\":\"a\",\"x\":\"\xc3\"}",
        br#"{model:"a"}"#,
        br#"{"model":"a\q"}"#,
        b"{\"model\":\"a\nb\"}",
    ];
    for body in bodies {
        let error = Scanner::new().scan(body).unwrap_err();
        assert!(matches!(error, ScanError::NotJson { .. }), "{:?} gave {error:?}", String::from_utf8_lossy(body));
        assert!(error.to_string().starts_with("We could not parse the JSON body of your request: "));
        assert_eq!(error.label(), "not_json");
    }
}

#[test]
fn one_scanner_handles_many_bodies() {
    let mut scanner = Scanner::new();
    for _ in 0..3 {
        assert_eq!(scanner.scan(CHAT.as_bytes()).unwrap().model.unwrap().name, "gpt-4o");
        assert!(scanner.scan(b"{").is_err());
        assert!(scanner.scan(CHAT_STREAM.as_bytes()).unwrap().stream);
        assert_eq!(scanner.scan(b"[]"), Err(ScanError::NotAnObject));
    }
}

#[test]
fn large_body() {
    let message =
        r#"{"role":"user","content":"Lorem ipsum dolor sit amet, consectetur adipiscing elit \"quoted\" \u00e9"},"#;
    let mut body = String::from(r#"{"messages":["#);
    while body.len() < 1 << 20 {
        body.push_str(message);
    }
    body.pop();
    body.push_str(r#"],"stream":true,"model":"gpt-4o-mini","max_tokens":4096}"#);

    let mut scanner = Scanner::new();
    let facts = scanner.scan(body.as_bytes()).unwrap();
    assert!(facts.stream);
    assert_eq!(facts.max_tokens, Some(4096));
    let span = facts.model.clone().unwrap().raw_span.unwrap();
    assert_eq!(&body[span.clone()], "gpt-4o-mini");

    let out = rewrite_model(body.as_bytes(), &facts, "gpt-4o").unwrap();
    assert_eq!(out.len(), body.len() - "-mini".len());
    assert_eq!(&out[..span.start], &body.as_bytes()[..span.start]);
    // The scanner still works after dropping its oversized scratch.
    assert_eq!(scanner.scan(&out).unwrap().model.unwrap().name, "gpt-4o");
}

proptest! {
    #[test]
    fn scan_never_panics_on_arbitrary_bytes(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = Scanner::new().scan(&body);
    }

    #[test]
    fn scan_never_panics_on_json_like_bytes(body in r#"[{}\[\]":,\\a-z0-9 .eE+\-ntrufls]{0,64}"#) {
        let mut scanner = Scanner::new();
        if let Ok(facts) = scanner.scan(body.as_bytes()) {
            // Whatever was accepted can be rewritten into something that scans to the new model.
            let out = rewrite_model(body.as_bytes(), &facts, "m\"x").unwrap();
            prop_assert_eq!(scanner.scan(&out).unwrap().model.unwrap().name, "m\"x");
        }
    }

    #[test]
    fn span_rewrite_changes_only_the_span(name in "[a-zA-Z0-9_./:-]{0,40}", new in "\\PC{0,20}") {
        let body = format!(r#"{{ "messages": [], "model" : "{name}", "n": 1 }}"#);
        let facts = Scanner::new().scan(body.as_bytes()).unwrap();
        let span = facts.model.clone().unwrap().raw_span.unwrap();
        let out = rewrite_model(body.as_bytes(), &facts, &new).unwrap();
        prop_assert_eq!(&out[..span.start], &body.as_bytes()[..span.start]);
        prop_assert!(out.ends_with(&body.as_bytes()[span.end..]));
        prop_assert_eq!(Scanner::new().scan(&out).unwrap().model.unwrap().name, new);
    }
}

/// Valid JSON with integers beyond 64 bits (a huge `seed`) must pass: the workspace enables
/// simd-json's `big-int-as-float`, so they parse as floats instead of failing the whole body.
#[test]
fn integers_beyond_64_bits_are_accepted() {
    let facts = scan(r#"{"model":"a","seed":99999999999999999999}"#).unwrap();
    assert_eq!(facts.model.unwrap().name, "a");
}
