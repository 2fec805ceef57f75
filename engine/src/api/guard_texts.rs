//! The texts a guardrail reads in a request or an answer, found by one borrowing parse.
//!
//! Most requests a guardrail checks are let through unchanged, so building a
//! `serde_json::Value` of the whole body (a map and a `String` per field) only to read a few
//! strings is waste. These visitors walk the body once and keep only the texts, borrowed from
//! the body when they hold no escapes. The order is the one [`super::guard`]'s `Value` walks
//! use, so that when a rule rewrites, the `Value` path finds the same texts in the same places.
//!
//! The walk is as lenient as the `Value` walks: a field of an unexpected shape is skipped,
//! never an error. One difference is deliberate: a key given twice is read twice (a `Value`
//! keeps the last), so a duplicate cannot hide a text from the checks when the body is
//! forwarded as it came.

use std::borrow::Cow;
use std::fmt;

use serde::Deserializer;
use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use crate::metrics::Endpoint;

/// A request's texts, and what it asked of the answer's shape.
#[derive(Debug, Default)]
pub struct RequestTexts<'a> {
    pub texts: Vec<Cow<'a, str>>,
    /// `response_format.type` is `json_object` or `json_schema`.
    pub asked_json: bool,
    /// `response_format.json_schema.schema`.
    pub schema: Option<Value>,
}

/// The texts of a request to `endpoint`, in the order of the `Value` walk. `Err`: not JSON.
pub fn request(endpoint: Endpoint, body: &[u8]) -> Result<RequestTexts<'_>, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let found = de.deserialize_any(RequestVisitor { endpoint })?;
    de.end()?;
    Ok(found)
}

/// The texts of an answer (OpenAI chat completion or completion, or Anthropic message), in the
/// order of the `Value` walk. `None`: not JSON.
pub fn answer(body: &[u8]) -> Option<Vec<Cow<'_, str>>> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let found = de.deserialize_any(AnswerVisitor).ok()?;
    de.end().ok()?;
    Some(found)
}

/// The keys the walks look at; everything else is skipped unread.
enum Key {
    Messages,
    Content,
    System,
    Prompt,
    Input,
    ResponseFormat,
    Text,
    Type,
    Choices,
    Message,
    ToolCalls,
    Function,
    Arguments,
    Other,
}

impl<'de> serde::Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Key, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_str<E: serde::de::Error>(self, k: &str) -> Result<Key, E> {
                Ok(match k {
                    "messages" => Key::Messages,
                    "content" => Key::Content,
                    "system" => Key::System,
                    "prompt" => Key::Prompt,
                    "input" => Key::Input,
                    "response_format" => Key::ResponseFormat,
                    "text" => Key::Text,
                    "type" => Key::Type,
                    "choices" => Key::Choices,
                    "message" => Key::Message,
                    "tool_calls" => Key::ToolCalls,
                    "function" => Key::Function,
                    "arguments" => Key::Arguments,
                    _ => Key::Other,
                })
            }
        }
        d.deserialize_identifier(KeyVisitor)
    }
}

/// Skips the value at hand.
fn skip<'de, A: MapAccess<'de>>(map: &mut A) -> Result<(), A::Error> {
    map.next_value::<IgnoredAny>().map(|_| ())
}

/// What the visitors below do with a scalar they do not expect: skip it.
macro_rules! skip_scalars {
    ($ret:ty, $empty:expr) => {
        fn visit_bool<E>(self, _: bool) -> Result<$ret, E> {
            Ok($empty)
        }
        fn visit_i64<E>(self, _: i64) -> Result<$ret, E> {
            Ok($empty)
        }
        fn visit_u64<E>(self, _: u64) -> Result<$ret, E> {
            Ok($empty)
        }
        fn visit_f64<E>(self, _: f64) -> Result<$ret, E> {
            Ok($empty)
        }
        fn visit_unit<E>(self) -> Result<$ret, E> {
            Ok($empty)
        }
    };
}

/// ... and a string too.
macro_rules! skip_other_shapes {
    ($ret:ty, $empty:expr) => {
        fn visit_str<E>(self, _: &str) -> Result<$ret, E> {
            Ok($empty)
        }
        skip_scalars!($ret, $empty);
    };
}

/// The seed side of each walking visitor below: it walks the value in place.
macro_rules! seeds {
    ($($t:ident),*) => {$(
        impl<'de> DeserializeSeed<'de> for $t<'_, 'de> {
            type Value = ();
            fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
                d.deserialize_any(self)
            }
        }
    )*};
}

/// A list where the walk expects none: skipped.
macro_rules! skip_seq {
    () => {
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(())
        }
    };
}

/// An object where the walk expects none: skipped.
macro_rules! skip_map {
    () => {
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            Ok(())
        }
    };
}

/// A visitor for a list whose every element `$elem` walks (anything else is skipped).
macro_rules! list_of {
    ($(#[$doc:meta])* $name:ident, $elem:ident, $what:literal) => {
        $(#[$doc])*
        struct $name<'s, 'a>(&'s mut Vec<Cow<'a, str>>);

        impl<'de> Visitor<'de> for $name<'_, 'de> {
            type Value = ();
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str($what)
            }
            skip_other_shapes!((), ());
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
                while seq.next_element_seed($elem(&mut *self.0))?.is_some() {}
                Ok(())
            }
            skip_map!();
        }
    };
}

seeds!(Strings, Content, Part, Messages, Message, ToolCalls, ToolCall, Arguments, Choices, Choice, MessageText);

/// Any JSON value: its text when it is a string, else nothing (and the value skipped).
struct Str<'a>(Option<Cow<'a, str>>);

impl<'de> serde::Deserialize<'de> for Str<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Str<'de>, D::Error> {
        struct StrVisitor;
        impl<'de> Visitor<'de> for StrVisitor {
            type Value = Str<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any value")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Str<'de>, E> {
                Ok(Str(Some(Cow::Borrowed(s))))
            }
            fn visit_str<E>(self, s: &str) -> Result<Str<'de>, E> {
                Ok(Str(Some(Cow::Owned(s.to_owned()))))
            }
            fn visit_string<E>(self, s: String) -> Result<Str<'de>, E> {
                Ok(Str(Some(Cow::Owned(s))))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Str<'de>, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Str(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Str<'de>, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Str(None))
            }
            skip_scalars!(Str<'de>, Str(None));
        }
        d.deserialize_any(StrVisitor)
    }
}

/// A string, or a list whose strings are read (`prompt`, `input`).
struct Strings<'s, 'a>(&'s mut Vec<Cow<'a, str>>);

impl<'de> Visitor<'de> for Strings<'_, 'de> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string or a list")
    }
    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<(), E> {
        self.0.push(Cow::Borrowed(s));
        Ok(())
    }
    fn visit_str<E>(self, s: &str) -> Result<(), E> {
        self.0.push(Cow::Owned(s.to_owned()));
        Ok(())
    }
    fn visit_string<E>(self, s: String) -> Result<(), E> {
        self.0.push(Cow::Owned(s));
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(Str(s)) = seq.next_element()? {
            self.0.extend(s);
        }
        Ok(())
    }
    skip_map!();
    skip_scalars!((), ());
}

/// A message's content: a string, or parts whose `text` is read, and, for Anthropic's tool
/// results, their own content.
struct Content<'s, 'a>(&'s mut Vec<Cow<'a, str>>);

impl<'de> Visitor<'de> for Content<'_, 'de> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string or a list of parts")
    }
    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<(), E> {
        self.0.push(Cow::Borrowed(s));
        Ok(())
    }
    fn visit_str<E>(self, s: &str) -> Result<(), E> {
        self.0.push(Cow::Owned(s.to_owned()));
        Ok(())
    }
    fn visit_string<E>(self, s: String) -> Result<(), E> {
        self.0.push(Cow::Owned(s));
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Part(&mut *self.0))?.is_some() {}
        Ok(())
    }
    skip_map!();
    skip_scalars!((), ());
}

/// One content part: its `text`, then (a `tool_result`) its content's texts.
struct Part<'s, 'a>(&'s mut Vec<Cow<'a, str>>);

impl<'de> Visitor<'de> for Part<'_, 'de> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a content part")
    }
    skip_other_shapes!((), ());
    skip_seq!();
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut text = Vec::new();
        let mut kind: Option<Cow<'de, str>> = None;
        let mut nested = Vec::new();
        // A tool call's input (rare, small): read whole, as the `Value` walk reads it.
        let mut input: Option<Value> = None;
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::Text => text.extend(map.next_value::<Str<'de>>()?.0),
                Key::Type => kind = map.next_value::<Str<'de>>()?.0,
                Key::Content => map.next_value_seed(Content(&mut nested))?,
                Key::Input => input = Some(map.next_value()?),
                _ => skip(&mut map)?,
            }
        }
        self.0.append(&mut text);
        match kind.as_deref() {
            Some("tool_result") => self.0.append(&mut nested),
            Some("tool_use") => self.0.extend(input.map(|i| Cow::Owned(i.to_string()))),
            _ => {}
        }
        Ok(())
    }
}

list_of!(
    /// A list of messages: each one's content.
    Messages, Message, "a list of messages"
);

/// One message (or a choice's `message`): its content.
struct Message<'s, 'a>(&'s mut Vec<Cow<'a, str>>);

impl<'de> Visitor<'de> for Message<'_, 'de> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a message")
    }
    skip_other_shapes!((), ());
    skip_seq!();
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut said = Vec::new();
        let mut args = Vec::new();
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::Content => map.next_value_seed(Content(&mut said))?,
                Key::ToolCalls => map.next_value_seed(ToolCalls(&mut args))?,
                _ => skip(&mut map)?,
            }
        }
        self.0.append(&mut said);
        self.0.append(&mut args);
        Ok(())
    }
}

list_of!(
    /// A message's `tool_calls`: each one's `function.arguments`.
    ToolCalls, ToolCall, "a list of tool calls"
);

/// One tool call: its `function`'s arguments.
struct ToolCall<'s, 'a>(&'s mut Vec<Cow<'a, str>>);

impl<'de> Visitor<'de> for ToolCall<'_, 'de> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a tool call")
    }
    skip_other_shapes!((), ());
    skip_seq!();
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::Function => map.next_value_seed(Arguments(&mut *self.0))?,
                _ => skip(&mut map)?,
            }
        }
        Ok(())
    }
}

/// A tool call's `function`: its `arguments` when they are a string.
struct Arguments<'s, 'a>(&'s mut Vec<Cow<'a, str>>);

impl<'de> Visitor<'de> for Arguments<'_, 'de> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a function call")
    }
    skip_other_shapes!((), ());
    skip_seq!();
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::Arguments => self.0.extend(map.next_value::<Str<'de>>()?.0),
                _ => skip(&mut map)?,
            }
        }
        Ok(())
    }
}

struct RequestVisitor {
    endpoint: Endpoint,
}

impl<'de> Visitor<'de> for RequestVisitor {
    type Value = RequestTexts<'de>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }
    skip_other_shapes!(RequestTexts<'de>, RequestTexts::default());
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RequestTexts<'de>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(RequestTexts::default())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RequestTexts<'de>, A::Error> {
        let mut found = RequestTexts::default();
        // Anthropic's `system` comes first whatever its place in the body.
        let mut system = Vec::new();
        while let Some(key) = map.next_key::<Key>()? {
            match (self.endpoint, key) {
                (Endpoint::ChatCompletions | Endpoint::Messages, Key::Messages) => {
                    map.next_value_seed(Messages(&mut found.texts))?
                }
                (Endpoint::Messages, Key::System) => map.next_value_seed(Content(&mut system))?,
                (Endpoint::Completions, Key::Prompt) | (Endpoint::Embeddings, Key::Input) => {
                    map.next_value_seed(Strings(&mut found.texts))?
                }
                (_, Key::ResponseFormat) => {
                    // Small and rare: read whole.
                    let format: Value = map.next_value()?;
                    found.asked_json = asks_json(&format);
                    found.schema = format.pointer("/json_schema/schema").cloned();
                }
                _ => skip(&mut map)?,
            }
        }
        if !system.is_empty() {
            system.append(&mut found.texts);
            found.texts = system;
        }
        Ok(found)
    }
}

/// `response_format` asks for JSON.
pub fn asks_json(format: &Value) -> bool {
    matches!(format.get("type").and_then(Value::as_str), Some("json_object" | "json_schema"))
}

struct AnswerVisitor;

impl<'de> Visitor<'de> for AnswerVisitor {
    type Value = Vec<Cow<'de, str>>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }
    skip_other_shapes!(Vec<Cow<'de, str>>, Vec::new());
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Cow<'de, str>>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Vec::new())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Vec<Cow<'de, str>>, A::Error> {
        let mut texts = Vec::new();
        let mut content = Vec::new();
        let mut message = false;
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::Choices => map.next_value_seed(Choices(&mut texts))?,
                Key::Type => message = map.next_value::<Str<'de>>()?.0.as_deref() == Some("message"),
                Key::Content => map.next_value_seed(Content(&mut content))?,
                _ => skip(&mut map)?,
            }
        }
        if message {
            texts.append(&mut content);
        }
        Ok(texts)
    }
}

list_of!(
    /// An answer's choices: each one's `message.content`, then its `text`.
    Choices, Choice, "a list of choices"
);

struct Choice<'s, 'a>(&'s mut Vec<Cow<'a, str>>);

impl<'de> Visitor<'de> for Choice<'_, 'de> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a choice")
    }
    skip_other_shapes!((), ());
    skip_seq!();
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut said = Vec::new();
        let mut text = Vec::new();
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::Message => map.next_value_seed(MessageText(&mut said))?,
                Key::Text => text.extend(map.next_value::<Str<'de>>()?.0),
                _ => skip(&mut map)?,
            }
        }
        self.0.append(&mut said);
        self.0.append(&mut text);
        Ok(())
    }
}

/// A choice's message: its content when it is a string (as the `Value` walk reads it).
struct MessageText<'s, 'a>(&'s mut Vec<Cow<'a, str>>);

impl<'de> Visitor<'de> for MessageText<'_, 'de> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a message")
    }
    skip_other_shapes!((), ());
    skip_seq!();
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut said = Vec::new();
        let mut args = Vec::new();
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::Content => said.extend(map.next_value::<Str<'de>>()?.0),
                Key::ToolCalls => map.next_value_seed(ToolCalls(&mut args))?,
                _ => skip(&mut map)?,
            }
        }
        self.0.append(&mut said);
        self.0.append(&mut args);
        Ok(())
    }
}
