//! A route's `priority:`: the [`Class`] its requests queue in when their
//! cluster is at its learned limit.
//!
//! ```yaml
//! routes:
//!   - id: checkout
//!     priority: critical          # every request of the route
//!   - id: goods
//!     priority:
//!       class: default            # when the key is missing or not listed
//!       key: tier                 # any key: user, ip, endpoint or a custom one
//!       classes: { gold: critical, free: sheddable, crawler: sheddable }
//! ```
//!
//! A route without it is `default`. Lookups are one hash of the key's text;
//! the table is the config's, so its size is the operator's.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::gate::Class;
use crate::bounds::{in_range, MAX_SLOTS};
use crate::config_error::ConfigPath;
use crate::{ConfigError, KeyRef, KeyValue, RequestKeys};

/// The `priority:` value as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PriorityFile {
    /// One class for the whole route.
    Fixed(Class),
    /// A class by a key's value.
    ByKey(PriorityByKey),
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PriorityByKey {
    /// The class of requests whose key is missing or not listed.
    #[serde(default = "default_class")]
    pub class: Class,
    /// The key whose value picks the class.
    pub key: String,
    /// Key value → class.
    pub classes: BTreeMap<String, Class>,
}

fn default_class() -> Class {
    Class::Default
}

/// A compiled `priority:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Priority {
    class: Class,
    by_key: Option<(KeyRef, HashMap<Box<str>, Class>)>,
}

impl Default for Priority {
    fn default() -> Self {
        Self::fixed(Class::Default)
    }
}

impl Priority {
    pub fn fixed(class: Class) -> Self {
        Self {
            class,
            by_key: None,
        }
    }

    /// The class of a request with these keys.
    pub fn class_of(&self, keys: &RequestKeys) -> Class {
        let Some((key, classes)) = &self.by_key else {
            return self.class;
        };
        let found = match keys.get(*key) {
            Some(KeyValue::Str(s)) => classes.get(s).copied(),
            Some(KeyValue::Ip(ip)) => classes.get(ip.to_string().as_str()).copied(),
            None => None,
        };
        found.unwrap_or(self.class)
    }
}

impl PriorityFile {
    /// Compiles it against the configured custom key names.
    pub fn compile(
        &self,
        custom_keys: &[String],
        path: &ConfigPath,
    ) -> Result<Priority, ConfigError> {
        match self {
            Self::Fixed(class) => Ok(Priority::fixed(*class)),
            Self::ByKey(b) => {
                let key = KeyRef::resolve(&b.key, custom_keys, path.field("key").as_str())?;
                in_range(b.classes.len() as u64, 1..=MAX_SLOTS, path.field("classes"))?;
                let classes = b
                    .classes
                    .iter()
                    .map(|(v, c)| (Box::from(v.as_str()), *c))
                    .collect();
                Ok(Priority {
                    class: b.class,
                    by_key: Some((key, classes)),
                })
            }
        }
    }
}

impl Serialize for PriorityFile {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Fixed(c) => c.serialize(s),
            Self::ByKey(b) => b.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for PriorityFile {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(PriorityVisitor)
    }
}

struct PriorityVisitor;

impl<'de> Visitor<'de> for PriorityVisitor {
    type Value = PriorityFile;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(
            "a class (sheddable, default, important, critical) or a map of class, key, classes",
        )
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<PriorityFile, E> {
        Class::parse(v)
            .map(PriorityFile::Fixed)
            .ok_or_else(|| E::invalid_value(de::Unexpected::Str(v), &self))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<PriorityFile, A::Error> {
        PriorityByKey::deserialize(de::value::MapAccessDeserializer::new(map))
            .map(PriorityFile::ByKey)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn keys(user: Option<&str>, tier: Option<&str>) -> RequestKeys {
        RequestKeys {
            endpoint: Arc::from("goods"),
            ip: "192.0.2.7".parse().unwrap(),
            client: "192.0.2.7".parse().unwrap(),
            user: user.map(Box::from),
            custom: vec![tier.map(Box::from)],
        }
    }

    fn compile(text: &str) -> Result<Priority, String> {
        let file: PriorityFile = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
        file.compile(&["tier".to_string()], &ConfigPath::root().field("priority"))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn a_fixed_class_applies_to_every_request() {
        let p = compile("critical").unwrap();
        assert_eq!(p.class_of(&keys(None, None)), Class::Critical);
        assert_eq!(
            Priority::default().class_of(&keys(None, None)),
            Class::Default
        );
    }

    #[test]
    fn a_key_picks_the_class_and_anything_else_takes_the_routes() {
        let p = compile(
            "{ class: important, key: tier, classes: { gold: critical, free: sheddable } }",
        )
        .unwrap();
        assert_eq!(p.class_of(&keys(None, Some("gold"))), Class::Critical);
        assert_eq!(p.class_of(&keys(None, Some("free"))), Class::Sheddable);
        assert_eq!(p.class_of(&keys(None, Some("silver"))), Class::Important);
        assert_eq!(p.class_of(&keys(None, None)), Class::Important);
        let by_user = compile("{ key: user, classes: { alice: critical } }").unwrap();
        assert_eq!(
            by_user.class_of(&keys(Some("alice"), None)),
            Class::Critical
        );
        assert_eq!(by_user.class_of(&keys(Some("bob"), None)), Class::Default);
        let by_ip = compile("{ key: ip, classes: { 192.0.2.7: sheddable } }").unwrap();
        assert_eq!(by_ip.class_of(&keys(None, None)), Class::Sheddable);
    }

    #[test]
    fn unknown_classes_and_keys_are_errors_with_their_path() {
        let e = compile("urgent").unwrap_err();
        assert!(e.contains("sheddable, default, important, critical"), "{e}");
        let e = compile("{ key: plan, classes: { a: critical } }").unwrap_err();
        assert!(
            e.contains("priority.key") && e.contains("unknown key \"plan\""),
            "{e}"
        );
        let e = compile("{ key: tier, classes: { a: urgent } }").unwrap_err();
        assert!(e.contains("urgent"), "{e}");
        let e = compile("{ key: tier, classes: {} }").unwrap_err();
        assert!(e.contains("priority.classes"), "{e}");
    }
}
