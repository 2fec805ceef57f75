//! An ordered, lazily opened editor for JSON text, for the few places that change a body's
//! shape (drop, rename or replace members) but must leave the rest of it as sent.
//!
//! An object is read as a list of (key, raw value) pairs: in order, duplicates kept, each value
//! left as its original text ([`Node::Raw`]). Only the values an edit reaches are opened, one
//! level at a time ([`with_object`], [`with_array`]); everything else is written back byte for
//! byte (numbers, escapes and inner whitespace as sent). An opened object or array is written
//! compact between its members; key order is kept.
//!
//! Why not a document tree: the workspace builds `serde_json` without `preserve_order`, so a
//! `serde_json::Value` round trip would sort the keys (and reprint every number). Why not the
//! simd-json tape ([`super::tape`]): it splices one value in place, while these edits change
//! the list of members.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::escape::write_string;

/// The members of an object, in order, duplicates kept.
pub(crate) type Entries<'a> = Vec<(Cow<'a, str>, Node<'a>)>;

/// A JSON value being edited: untouched values are their original text.
pub(crate) enum Node<'a> {
    /// As it was in the input.
    Raw(&'a RawValue),
    /// An opened object.
    Object(Entries<'a>),
    /// An opened array.
    Array(Vec<Node<'a>>),
    /// A value written anew, as JSON text.
    Json(String),
}

/// The members of the object `text`, each value left raw.
pub(crate) fn parse_object(text: &str) -> Result<Entries<'_>, serde_json::Error> {
    serde_json::from_str::<RawObject<'_>>(text).map(|o| o.0)
}

/// [`parse_object`] over bytes (UTF-8 is checked).
pub(crate) fn parse_object_bytes(bytes: &[u8]) -> Result<Entries<'_>, serde_json::Error> {
    serde_json::from_slice::<RawObject<'_>>(bytes).map(|o| o.0)
}

/// The items of the array `text`, each left raw.
pub(crate) fn parse_array(text: &str) -> Result<Vec<Node<'_>>, serde_json::Error> {
    serde_json::from_str::<Vec<&RawValue>>(text).map(|items| items.into_iter().map(Node::Raw).collect())
}

/// Runs `f` on the members of `node` if it is an object, opening a raw object only for the
/// edit (it stays raw, byte for byte, when `f` changes nothing).
pub(crate) fn with_object<'a>(
    node: &mut Node<'a>,
    f: impl FnOnce(&mut Entries<'a>) -> Result<bool, serde_json::Error>,
) -> Result<bool, serde_json::Error> {
    match node {
        Node::Object(entries) => f(entries),
        Node::Raw(raw) if raw.get().starts_with('{') => {
            let mut entries = parse_object(raw.get())?;
            let changed = f(&mut entries)?;
            if changed {
                *node = Node::Object(entries);
            }
            Ok(changed)
        }
        _ => Ok(false),
    }
}

/// Runs `f` on the items of `node` if it is an array, opening a raw array only for the edit
/// (it stays raw, byte for byte, when `f` changes nothing).
pub(crate) fn with_array<'a>(
    node: &mut Node<'a>,
    f: impl FnOnce(&mut Vec<Node<'a>>) -> Result<bool, serde_json::Error>,
) -> Result<bool, serde_json::Error> {
    match node {
        Node::Array(items) => f(items),
        Node::Raw(raw) if raw.get().starts_with('[') => {
            let mut items = parse_array(raw.get())?;
            let changed = f(&mut items)?;
            if changed {
                *node = Node::Array(items);
            }
            Ok(changed)
        }
        _ => Ok(false),
    }
}

/// Writes `entries` as a JSON object (compact between members).
pub(crate) fn write_entries(entries: &Entries<'_>, out: &mut Vec<u8>) {
    out.push(b'{');
    for (i, (key, node)) in entries.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_string(out, key);
        out.push(b':');
        write_node(node, out);
    }
    out.push(b'}');
}

fn write_node(node: &Node<'_>, out: &mut Vec<u8>) {
    match node {
        Node::Raw(raw) => out.extend_from_slice(raw.get().as_bytes()),
        Node::Json(text) => out.extend_from_slice(text.as_bytes()),
        Node::Object(entries) => write_entries(entries, out),
        Node::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_node(item, out);
            }
            out.push(b']');
        }
    }
}

struct RawObject<'a>(Entries<'a>);

impl<'de> Deserialize<'de> for RawObject<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor;
        impl<'de> Visitor<'de> for ObjectVisitor {
            type Value = RawObject<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
                    let value: &'de RawValue = map.next_value()?;
                    entries.push((key, Node::Raw(value)));
                }
                Ok(RawObject(entries))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
                Err(de::Error::invalid_type(de::Unexpected::Seq, &self))
            }
        }
        deserializer.deserialize_map(ObjectVisitor)
    }
}

/// An object key, borrowed from the input when it has no escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use proptest::prelude::*;
    use serde_json::{Value, json};

    fn raw(s: &str) -> &RawValue {
        serde_json::from_str(s).unwrap()
    }

    fn written(entries: &Entries<'_>) -> String {
        let mut out = Vec::new();
        write_entries(entries, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn a_hand_built_node_writes_its_raw_bytes() {
        let entries: Entries<'_> = vec![("a".into(), Node::Raw(raw("[1, 2]")))];
        assert_eq!(written(&entries), r#"{"a":[1, 2]}"#);
    }

    #[test]
    fn members_keep_their_order_duplicates_and_bytes() {
        let text = r#" { "z" : 1.50 , "a": {"b" : "\u00e9"}, "z": [ 1 ,2 ] } "#;
        let entries = parse_object(text).unwrap();
        let keys: Vec<&str> = entries.iter().map(|(k, _)| k.as_ref()).collect();
        assert_eq!(keys, ["z", "a", "z"]);
        assert_eq!(written(&entries), r#"{"z":1.50,"a":{"b" : "\u00e9"},"z":[ 1 ,2 ]}"#);
        assert_eq!(written(&parse_object_bytes(text.as_bytes()).unwrap()), written(&entries));
    }

    #[test]
    fn escaped_keys_are_read_unescaped_and_written_escaped() {
        let entries = parse_object(r#"{"k\u0065y":1,"q\"uote\n":2}"#).unwrap();
        let keys: Vec<&str> = entries.iter().map(|(k, _)| k.as_ref()).collect();
        assert_eq!(keys, ["key", "q\"uote\n"]);
        assert!(matches!(entries[0].0, Cow::Owned(_)), "an escaped key cannot be borrowed");
        assert_eq!(written(&entries), r#"{"key":1,"q\"uote\n":2}"#);
    }

    #[test]
    fn non_objects_and_bad_json_are_refused() {
        for text in [r#"["a"]"#, r#""a""#, "1", "null", r#"{"a": }"#, r#"{"a":1"#, r#"{"a":1} x"#] {
            assert!(parse_object(text).is_err(), "{text}");
        }
        assert!(parse_object_bytes(b"{\"a\":\"\xff\"}").is_err(), "invalid UTF-8");
        assert!(parse_array(r#"{"a":1}"#).is_err());
        assert_eq!(parse_array("[]").unwrap().len(), 0);
    }

    #[test]
    fn a_value_is_opened_only_when_the_edit_changes_it() {
        let mut entries = parse_object(r#"{"o": {"a": 1, "b": [ 2 ]}, "l": [ {"a": 1}, 3 ], "n": 5}"#).unwrap();
        let drop_a = |inner: &mut Entries<'_>| {
            let before = inner.len();
            inner.retain(|(k, _)| k.as_ref() != "a");
            Ok(inner.len() != before)
        };
        let drop_x = |inner: &mut Entries<'_>| {
            let before = inner.len();
            inner.retain(|(k, _)| k.as_ref() != "x");
            Ok(inner.len() != before)
        };
        assert!(!with_object(&mut entries[0].1, drop_x).unwrap());
        assert!(matches!(entries[0].1, Node::Raw(_)), "unchanged: still raw");
        assert!(with_object(&mut entries[0].1, drop_a).unwrap());
        assert!(matches!(entries[0].1, Node::Object(_)));
        let changed = with_array(&mut entries[1].1, |items| {
            let mut any = false;
            for item in items.iter_mut() {
                any |= with_object(item, drop_a)?;
            }
            Ok(any)
        })
        .unwrap();
        assert!(changed);
        // Neither an object nor an array: nothing to open.
        assert!(!with_object(&mut entries[2].1, drop_a).unwrap());
        assert!(!with_array(&mut entries[2].1, |_| Ok(true)).unwrap());
        assert_eq!(written(&entries), r#"{"o":{"b":[ 2 ]},"l":[{},3],"n":5}"#);
    }

    /// Opens every object and array below `node`.
    fn open_all(node: &mut Node<'_>) {
        let _ = with_object(node, |entries| {
            entries.iter_mut().for_each(|(_, n)| open_all(n));
            Ok(true)
        });
        let _ = with_array(node, |items| {
            items.iter_mut().for_each(open_all);
            Ok(true)
        });
    }

    fn json_object() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| json!(f)),
            "[a-z\"\\\\é\u{1}\n ]{0,6}".prop_map(Value::String),
        ];
        let value = leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[a-z\"\u{1f}é]{0,3}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        });
        prop::collection::btree_map("[a-z\"\\\\]{0,4}", value, 0..6)
            .prop_map(|m| Value::Object(m.into_iter().collect()))
    }

    proptest! {
        /// Compact JSON reads and writes back byte for byte, whether its values are left raw or
        /// every one of them is opened.
        #[test]
        fn compact_text_round_trips(object in json_object()) {
            let text = serde_json::to_string(&object).unwrap();
            let mut entries = parse_object(&text).unwrap();
            prop_assert_eq!(&written(&entries), &text);
            entries.iter_mut().for_each(|(_, n)| open_all(n));
            prop_assert_eq!(&written(&entries), &text);
        }
    }
}
