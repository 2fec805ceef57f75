#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;

fn q(drop: &[&str], rename: &[(&str, &str)]) -> Quirks {
    Quirks::new(strings(drop), pairs(rename))
}

fn applied(quirks: &Quirks, body: &str) -> Option<String> {
    quirks.apply(body.as_bytes()).unwrap().map(|b| String::from_utf8(b).unwrap())
}

#[test]
fn no_quirks_or_no_mention_keeps_the_bytes() {
    let body = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
    assert_eq!(applied(&Quirks::default(), body), None);
    assert_eq!(applied(&q(&["logit_bias"], &[("max_completion_tokens", "max_tokens")]), body), None);
    // Mentioned only inside a string: parsed, but nothing changes.
    let body = r#"{"model":"m","messages":[{"role":"user","content":"what is \"logit_bias\"?"}]}"#;
    assert_eq!(applied(&q(&["logit_bias"], &[]), body), None);
    let body = r#"{"model":"m","note":"logit_bias"}"#;
    assert_eq!(applied(&q(&["logit_bias"], &[]), body), None);
}

#[test]
fn drops_top_level_fields_and_keeps_order_and_bytes() {
    let body = r#"{ "model" : "m", "logit_bias": {"1": -100}, "messages": [ {"role": "user", "content": "a\u00e9\n"} ],
            "logprobs": true, "temperature": 0.70, "top_logprobs": 2 }"#;
    let out = applied(&q(&["logprobs", "logit_bias", "top_logprobs"], &[]), body).unwrap();
    assert_eq!(out, r#"{"model":"m","messages":[ {"role": "user", "content": "a\u00e9\n"} ],"temperature":0.70}"#);
}

#[test]
fn renames_in_place_and_the_renamed_value_wins() {
    let body = r#"{"max_tokens":10,"model":"m","max_completion_tokens":200,"stream":true}"#;
    let out = applied(&q(&[], &[("max_completion_tokens", "max_tokens")]), body).unwrap();
    assert_eq!(out, r#"{"model":"m","max_tokens":200,"stream":true}"#);
}

#[test]
fn duplicates_the_last_occurrence_is_renamed() {
    let body = r#"{"seed":1,"model":"m","seed":2}"#;
    assert_eq!(applied(&q(&[], &[("seed", "random_seed")]), body).unwrap(), r#"{"model":"m","random_seed":2}"#);
    let body = r#"{"store":true,"model":"m","store":false}"#;
    assert_eq!(applied(&q(&["store"], &[]), body).unwrap(), r#"{"model":"m"}"#);
}

#[test]
fn nested_paths() {
    let body = r#"{"model":"m","stream":true,"stream_options":{"include_usage":true,"x":1}}"#;
    let out = applied(&q(&["stream_options.include_usage"], &[]), body).unwrap();
    assert_eq!(out, r#"{"model":"m","stream":true,"stream_options":{"x":1}}"#);
    let out = applied(&q(&[], &[("stream_options.include_usage", "stream_options.usage")]), body).unwrap();
    assert_eq!(out, r#"{"model":"m","stream":true,"stream_options":{"usage":true,"x":1}}"#);
    // Absent nested key, or a parent that is not an object: nothing changes.
    assert_eq!(applied(&q(&["stream_options.nope"], &[]), body), None);
    assert_eq!(applied(&q(&["model.x"], &[]), body), None);
}

#[test]
fn array_paths_edit_every_object_and_leave_the_rest_raw() {
    let body = r#"{"model":"m","messages":[{"role":"system","content":"be brief"},{"role":"user","name":"ann","content":"hi"},"odd",{"role":"assistant","name":"bot","content":null}]}"#;
    let out = applied(&Quirks::for_host("api.groq.com"), body).unwrap();
    assert_eq!(
        out,
        r#"{"model":"m","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hi"},"odd",{"role":"assistant","content":null}]}"#
    );
    let none = r#"{"model":"m","messages":[{"role":"user","content":"my name is x"}]}"#;
    assert_eq!(applied(&Quirks::for_host("api.groq.com"), none), None);
    // `"name"` appears, but not as a key of a message: parsed, nothing changes.
    let tool = r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function","function":{"name":"f"}}]}"#;
    assert_eq!(applied(&Quirks::for_host("api.groq.com"), tool), None);
}

#[test]
fn escaped_keys_are_found_and_rewritten_escaped_as_needed() {
    let body = r#"{"model":"m","max_completion_\u0074okens":5,"k\"ey":1}"#;
    let out = applied(&q(&[], &[("max_completion_tokens", "max_tokens")]), body).unwrap();
    assert_eq!(out, r#"{"model":"m","max_tokens":5,"k\"ey":1}"#);
}

#[test]
fn non_objects_are_refused() {
    let quirks = q(&["store"], &[]);
    assert_eq!(quirks.apply(br#"["store"]"#).unwrap_err().status, 400);
    assert_eq!(quirks.apply(br#"{"store": }"#).unwrap_err().status, 400);
    assert_eq!(quirks.apply(b"\"store\"").unwrap_err().status, 400);
}

#[test]
fn defaults_per_host() {
    let mistral = Quirks::for_host("API.Mistral.AI:443");
    let body = r#"{"model":"mistral-large-latest","messages":[],"max_completion_tokens":64,"seed":7,"store":false}"#;
    assert_eq!(
        applied(&mistral, body).unwrap(),
        r#"{"model":"mistral-large-latest","messages":[],"max_tokens":64,"random_seed":7}"#
    );
    assert_eq!(Quirks::for_host("https://api.deepseek.com/v1").rename_params, pairs(&[MAX_TOKENS]));
    assert_eq!(Quirks::for_host("openrouter.ai").rename_params, pairs(&[MAX_TOKENS]));
    assert_eq!(Quirks::for_host("api.perplexity.ai.").rename_params, pairs(&[MAX_TOKENS]));
    assert_eq!(Quirks::for_host("localhost:11434").rename_params, pairs(&[MAX_TOKENS]));
    assert_eq!(Quirks::for_host("http://127.0.0.1:11434/v1").rename_params, pairs(&[MAX_TOKENS]));
    assert!(Quirks::for_host("api.cerebras.ai").drop_params.contains(&"service_tier".to_owned()));
    for host in ["api.x.ai", "api.together.xyz", "api.fireworks.ai", "localhost:8000", "api.openai.com", ""] {
        assert!(Quirks::for_host(host).is_empty(), "{host}");
    }
    for quirks in ["api.mistral.ai", "api.groq.com", "api.cerebras.ai", "api.deepseek.com", "localhost:11434"]
        .map(Quirks::for_host)
    {
        quirks.validate().unwrap();
    }
}

#[test]
fn merged_configuration_extends_and_overrides() {
    let defaults = Quirks::for_host("api.mistral.ai");
    let merged = Quirks::merged(
        defaults,
        strings(&["seed", "stream_options", "store"]),
        pairs(&[("max_completion_tokens", "max_new_tokens")]),
    );
    assert_eq!(merged.drop_params, strings(&["seed", "stream_options", "store"]));
    assert_eq!(merged.rename_params, pairs(&[("max_completion_tokens", "max_new_tokens")]));
    assert_eq!(Quirks::merged(Quirks::default(), vec![], vec![]), Quirks::default());
}

#[test]
fn validation() {
    assert!(q(&["a.b", "messages[].name"], &[("a.b", "c"), ("a.b", "a.c")]).validate().is_ok());
    for bad in [
        q(&[""], &[]),
        q(&["a..b"], &[]),
        q(&["messages[]"], &[]),
        q(&["[].x"], &[]),
        q(&[], &[("a.b", "c.d")]),
        q(&[], &[("a", "")]),
        q(&[], &[("a", "b[]")]),
    ] {
        let err = bad.validate().unwrap_err();
        assert!(!err.to_string().is_empty());
    }
}

#[test]
fn a_cross_object_target_is_read_as_its_last_segment() {
    let body = r#"{"a":{"b":1}}"#;
    assert_eq!(applied(&q(&[], &[("a.b", "c.d")]), body).unwrap(), r#"{"a":{"d":1}}"#);
}

#[test]
fn drops_then_renames() {
    let body = r#"{"max_tokens":1,"max_completion_tokens":2}"#;
    let out = applied(&q(&["max_tokens"], &[("max_completion_tokens", "max_tokens")]), body).unwrap();
    assert_eq!(out, r#"{"max_tokens":2}"#);
}

fn json_body() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i32>().prop_map(|n| json!(n)),
        "[a-z\"\\\\é ]{0,6}".prop_map(Value::String),
    ];
    let value = leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("(a|b|n|name|seed)", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    });
    prop::collection::btree_map("(a|b|n|seed|messages|max_tokens|max_completion_tokens)", value, 0..6)
        .prop_map(|m| Value::Object(m.into_iter().collect()))
}

proptest! {
    /// The edit agrees with the same edit done on a parsed document, and untouched bodies
    /// are reported as such.
    #[test]
    fn agrees_with_a_tree_edit(body in json_body()) {
        let quirks = q(&["a", "messages[].name", "b.n"], &[("max_completion_tokens", "max_tokens"), ("seed", "random_seed")]);
        let text = serde_json::to_string(&body).unwrap();
        let mut want = body.clone();
        let obj = want.as_object_mut().unwrap();
        obj.remove("a");
        if let Some(Value::Array(items)) = obj.get_mut("messages") {
            for item in items.iter_mut().filter_map(Value::as_object_mut) { item.remove("name"); }
        }
        if let Some(Value::Object(b)) = obj.get_mut("b") { b.remove("n"); }
        for (from, to) in [("max_completion_tokens", "max_tokens"), ("seed", "random_seed")] {
            if let Some(v) = obj.remove(from) { obj.insert(to.to_owned(), v); }
        }
        match quirks.apply(text.as_bytes()).unwrap() {
            Some(out) => {
                let got: Value = serde_json::from_slice(&out).unwrap();
                prop_assert_eq!(&got, &want);
                prop_assert_ne!(&want, &body);
            }
            None => prop_assert_eq!(&want, &body),
        }
    }
}
