//! Parsing only what is read: a payload is parsed into a `Value` holding just the paths that
//! classification and routing look at (JSON pointers), everything else skipped without
//! allocating. A push's commits, a merge request's diff stats and the like are scanned (the
//! whole body is still checked to be JSON) but never built into a tree.

use std::collections::HashMap;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Every pointer a provider's `classify` reads. A tidy test checks that each pointer written
/// in a provider's file is listed, and the samples test that a payload parsed with these gives
/// the classification the whole tree gives.
pub const PROVIDER_POINTERS: &[&str] = &[
    "/action",
    "/actor/display_name",
    "/actor/nickname",
    "/actor/username",
    "/after",
    "/before",
    "/check_suite/head_branch",
    "/group/full_path",
    "/object_attributes/action",
    "/object_attributes/ref",
    "/object_attributes/tag",
    "/object_attributes/target_branch",
    "/object_kind",
    "/project/path_with_namespace",
    "/pull_request/base/ref",
    "/pullrequest/destination/branch/name",
    "/push/changes/0/new/name",
    "/push/changes/0/new/target/hash",
    "/push/changes/0/new/type",
    "/push/changes/0/old/target/hash",
    "/pusher/login",
    "/ref",
    "/ref_type",
    "/release/tag_name",
    "/repository/full_name",
    "/sender/login",
    "/sender/username",
    "/tag",
    "/type",
    "/user/username",
    "/user_username",
    "/workflow_run/head_branch",
];

/// The paths to keep, as a tree of pointer segments.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Fields {
    children: HashMap<String, Fields>,
    /// A pointer ends here: keep the whole value below.
    whole: bool,
}

impl Fields {
    /// The providers' pointers and `extra` ones (routes' conditions).
    pub fn with<'a>(extra: impl IntoIterator<Item = &'a str>) -> Self {
        let mut fields = Self::default();
        for pointer in PROVIDER_POINTERS.iter().copied().chain(extra) {
            fields.add(pointer);
        }
        fields
    }

    /// Adds an RFC 6901 pointer (`""` is the whole document).
    pub fn add(&mut self, pointer: &str) {
        let mut node = self;
        if !pointer.is_empty() {
            for segment in pointer.strip_prefix('/').unwrap_or(pointer).split('/') {
                let segment = segment.replace("~1", "/").replace("~0", "~");
                node = node.children.entry(segment).or_default();
            }
        }
        node.whole = true;
    }
}

/// The JSON text parsed into a `Value` with only `fields` in it (`None` if it is not JSON).
/// `Value::pointer` on the result answers as on the whole tree for every pointer in `fields`.
pub fn parse_fields(json: &[u8], fields: &Fields) -> Option<Value> {
    if fields.whole {
        return serde_json::from_slice(json).ok();
    }
    let mut deserializer = serde_json::Deserializer::from_slice(json);
    let value = fields.deserialize(&mut deserializer).ok()?;
    deserializer.end().ok()?;
    Some(value)
}

impl<'de> DeserializeSeed<'de> for &Fields {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(Sparse(self))
    }
}

struct Sparse<'a>(&'a Fields);

impl Sparse<'_> {
    /// The value under `key`: all of it, the kept parts of it, or skipped.
    fn next<'de, A: MapAccess<'de>>(
        &self,
        key: &str,
        map: &mut A,
    ) -> Result<Option<Value>, A::Error> {
        match self.0.children.get(key) {
            Some(child) if child.whole => map.next_value::<Value>().map(Some),
            Some(child) => map.next_value_seed(child).map(Some),
            None => map.next_value::<IgnoredAny>().map(|_| None),
        }
    }
}

impl<'de> Visitor<'de> for Sparse<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("JSON")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut kept = Map::new();
        // Keys are borrowed from the text where they can be; only kept ones are copied.
        while let Some(key) = map.next_key::<Key<'de>>()? {
            if let Some(value) = self.next(key.as_str(), &mut map)? {
                kept.insert(key.as_str().to_owned(), value);
            }
        }
        Ok(Value::Object(kept))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let last = self
            .0
            .children
            .keys()
            .filter_map(|segment| segment.parse::<usize>().ok())
            .max();
        let mut kept = Vec::new();
        let mut index = 0usize;
        loop {
            let child = match last {
                Some(last) if index <= last => self.0.children.get(&index.to_string()),
                _ => None,
            };
            let element = match child {
                Some(child) if child.whole => seq.next_element::<Value>()?,
                Some(child) => seq.next_element_seed(child)?,
                None => match seq.next_element::<IgnoredAny>()? {
                    // Elements before a kept index stay as nulls, so indices keep their meaning.
                    Some(_) if last.is_some_and(|last| index < last) => Some(Value::Null),
                    Some(_) => {
                        index += 1;
                        continue;
                    }
                    None => None,
                },
            };
            let Some(element) = element else { break };
            kept.push(element);
            index += 1;
        }
        Ok(Value::Array(kept))
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
}

/// An object key, borrowed from the JSON text unless it had escapes.
enum Key<'de> {
    Borrowed(&'de str),
    Owned(String),
}

impl Key<'_> {
    fn as_str(&self) -> &str {
        match self {
            Key::Borrowed(s) => s,
            Key::Owned(s) => s,
        }
    }
}

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key::Borrowed(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key::Owned(v.to_owned()))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_paths_answer_as_on_the_whole_tree() {
        let text = br#"{"a":{"b":[1,{"c":"x"}],"skip":{"deep":[1,2,3]}},"k\"ey":5,"n":null,
                        "arr":[{"v":1},{"v":2},{"v":3}],"s":"t","z":[null,1]}"#;
        let whole: Value = serde_json::from_slice(text).unwrap();
        let pointers = [
            "/a/b/1/c",
            "/k\"ey",
            "/n",
            "/arr/1/v",
            "/s",
            "/missing/x",
            "/s/x",
            "/a/skip",
            "/z/0",
        ];
        let fields = Fields::with(pointers);
        let sparse = parse_fields(text, &fields).unwrap();
        for pointer in pointers.iter().chain(PROVIDER_POINTERS) {
            assert_eq!(sparse.pointer(pointer), whole.pointer(pointer), "{pointer}");
        }
        assert_eq!(sparse.pointer("/arr/0/v"), None, "not kept");
    }

    #[test]
    fn what_is_not_json_is_refused_as_by_the_whole_parse() {
        let fields = Fields::with([]);
        for text in [
            &b"{"[..],
            b"{\"a\":1} x",
            b"[1,]",
            b"",
            b"{\"a\":tru}",
            b"{\"skip\":[1,2",
        ] {
            assert!(serde_json::from_slice::<Value>(text).is_err());
            assert_eq!(
                parse_fields(text, &fields),
                None,
                "{:?}",
                String::from_utf8_lossy(text)
            );
        }
        assert_eq!(parse_fields(b"[]", &fields), Some(Value::Array(vec![])));
        assert_eq!(parse_fields(b"7", &fields), Some(Value::from(7)));
    }
}
