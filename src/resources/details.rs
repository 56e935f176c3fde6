//! RFC 9396 rich authorization details: the types a resource declares in
//! the resources file, the checks a request's `authorization_details`
//! must pass (§5: unknown types and invalid objects are
//! `invalid_authorization_details`), and the words a person reads before
//! approving them.
//!
//! ```toml
//! [[resource]]
//! uri = "https://mcp.example.com/mcp"
//!
//! [[resource.authorization_details]]
//! type = "mcp_tool_call"
//! description = "One call of one tool"
//! render = "Call the tool {tool} with {arguments}"
//! fields.tool = { kind = "string", required = true, max_length = 128 }
//! fields.arguments = { kind = "object" }
//! ```
//!
//! A declaration is a field list rather than a JSON Schema: what a person
//! must understand before saying yes is a short sentence over a few named
//! values, and a field list is what can be rendered in words. Besides its
//! own fields an entry may carry RFC 9396 §2.2's common ones
//! (`locations`, `actions`, `datatypes`, `identifier`, `privileges`);
//! any other member is refused, so that nothing the owner did not see can
//! ride along.

use std::collections::BTreeMap;

use indexmap::IndexMap;

use serde::Deserialize;
use serde_json::{Map, Value};

/// Most entries in one request: each is one action a person reads.
pub const MAX_ENTRIES: usize = 8;
/// Most bytes of the `authorization_details` parameter.
pub const MAX_JSON_BYTES: usize = 8 * 1024;
/// Longest string a field may hold when its declaration names no limit.
const DEFAULT_MAX_LENGTH: usize = 1024;

/// The kind of value a declared field holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    String,
    Integer,
    Number,
    Boolean,
    Object,
    Array,
    /// An array of strings.
    StringList,
}

impl Kind {
    fn holds(self, value: &Value) -> bool {
        match self {
            Kind::String => value.is_string(),
            Kind::Integer => value.is_i64() || value.is_u64(),
            Kind::Number => value.is_number(),
            Kind::Boolean => value.is_boolean(),
            Kind::Object => value.is_object(),
            Kind::Array => value.is_array(),
            Kind::StringList => value
                .as_array()
                .is_some_and(|a| a.iter().all(Value::is_string)),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::String => "a string",
            Kind::Integer => "an integer",
            Kind::Number => "a number",
            Kind::Boolean => "true or false",
            Kind::Object => "a JSON object",
            Kind::Array => "a JSON array",
            Kind::StringList => "an array of strings",
        }
    }
}

/// One declared field.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Field {
    pub kind: Kind,
    #[serde(default)]
    pub required: bool,
    /// Longest string (a `string` field, or each of a `string_list`).
    pub max_length: Option<usize>,
    /// What the field is called on the approval page (default: its name).
    pub label: Option<String>,
}

/// A type as the resources file declares it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetailType {
    #[serde(rename = "type")]
    pub name: String,
    pub description: Option<String>,
    /// The sentence shown to the person, with `{field}` placeholders.
    pub render: String,
    /// In the order declared: the order the approval page lists them.
    #[serde(default)]
    pub fields: IndexMap<String, Field>,
}

/// RFC 9396 §2.2: members every type may carry, and their kinds.
const COMMON: [(&str, Kind); 5] = [
    ("locations", Kind::StringList),
    ("actions", Kind::StringList),
    ("datatypes", Kind::StringList),
    ("identifier", Kind::String),
    ("privileges", Kind::StringList),
];

impl DetailType {
    /// Whether the declaration itself makes sense (at start-up).
    pub fn validate(&self) -> Result<(), String> {
        if self.name.is_empty() || self.name.len() > 128 || self.name.contains(char::is_whitespace)
        {
            return Err(format!(
                "authorization details type {:?}: a type is one token of at most 128 characters",
                self.name
            ));
        }
        for name in self.fields.keys() {
            if name == "type" || COMMON.iter().any(|(c, _)| c == name) {
                return Err(format!(
                    "authorization details type {:?}: field {name:?} is defined by RFC 9396 and cannot be declared",
                    self.name
                ));
            }
        }
        for placeholder in placeholders(&self.render) {
            if !self.fields.contains_key(placeholder)
                && !COMMON.iter().any(|(c, _)| *c == placeholder)
            {
                return Err(format!(
                    "authorization details type {:?}: render names {{{placeholder}}}, which is no field",
                    self.name
                ));
            }
        }
        Ok(())
    }

    /// RFC 9396 §5: whether `entry` is a valid object of this type.
    fn check(&self, entry: &Map<String, Value>) -> Result<(), String> {
        for (member, value) in entry {
            if member == "type" {
                continue;
            }
            let (kind, max) = match (
                self.fields.get(member),
                COMMON.iter().find(|(c, _)| c == member),
            ) {
                (Some(f), _) => (f.kind, f.max_length.unwrap_or(DEFAULT_MAX_LENGTH)),
                (None, Some((_, kind))) => (*kind, DEFAULT_MAX_LENGTH),
                (None, None) => {
                    return Err(format!("type {:?} has no member {member:?}", self.name));
                }
            };
            if !kind.holds(value) {
                return Err(format!("{member:?} must be {}", kind.name()));
            }
            let too_long = match value {
                Value::String(s) => s.chars().count() > max,
                Value::Array(a) if kind == Kind::StringList => a
                    .iter()
                    .any(|s| s.as_str().is_some_and(|s| s.chars().count() > max)),
                _ => false,
            };
            if too_long {
                return Err(format!("{member:?} is longer than {max} characters"));
            }
        }
        if let Some((name, _)) = self
            .fields
            .iter()
            .find(|(name, f)| f.required && !entry.contains_key(*name))
        {
            return Err(format!("type {:?} requires {name:?}", self.name));
        }
        Ok(())
    }

    /// The entry in words: the type's sentence with its values filled in,
    /// and each member on its own line.
    pub fn describe(&self, entry: &Value) -> Described {
        let text = |name: &str| entry.get(name).map_or_else(|| "(not given)".into(), words);
        let mut sentence = String::new();
        let mut rest = self.render.as_str();
        while let Some(open) = rest.find('{') {
            sentence.push_str(&rest[..open]);
            match rest[open..].find('}') {
                Some(close) => {
                    sentence.push_str(&text(&rest[open + 1..open + close]));
                    rest = &rest[open + close + 1..];
                }
                None => {
                    sentence.push_str(&rest[open..]);
                    rest = "";
                }
            }
        }
        sentence.push_str(rest);
        let mut fields = Vec::new();
        for (name, field) in &self.fields {
            if entry.get(name).is_some() {
                fields.push((
                    field.label.clone().unwrap_or_else(|| name.clone()),
                    text(name),
                ));
            }
        }
        for (name, _) in COMMON {
            if entry.get(name).is_some() {
                fields.push((name.to_string(), text(name)));
            }
        }
        Described {
            kind: self
                .description
                .clone()
                .unwrap_or_else(|| self.name.clone()),
            sentence,
            fields,
        }
    }
}

/// One entry of `authorization_details` in words, for the consent and
/// approval pages (the templates escape it).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Described {
    /// The type's description (or its name).
    pub kind: String,
    pub sentence: String,
    /// Each member, labelled, as text.
    pub fields: Vec<(String, String)>,
}

/// A value as a person reads it: strings as they are, lists joined,
/// objects as compact JSON with their keys in order.
fn words(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Array(list) if list.iter().all(Value::is_string) => list
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(", "),
        Value::Object(map) if map.is_empty() => "no arguments".into(),
        other => other.to_string(),
    }
}

fn placeholders(render: &str) -> impl Iterator<Item = &str> {
    render
        .split('{')
        .skip(1)
        .filter_map(|s| s.split_once('}').map(|(p, _)| p))
}

/// The parsed `authorization_details` parameter: a JSON array of at most
/// [`MAX_ENTRIES`] objects, each with a string `type`.
pub fn parse(text: &str) -> Result<Vec<Map<String, Value>>, String> {
    if text.len() > MAX_JSON_BYTES {
        return Err(format!("longer than {MAX_JSON_BYTES} bytes"));
    }
    let value: Value = serde_json::from_str(text).map_err(|_| "not a JSON array".to_string())?;
    let Value::Array(list) = value else {
        return Err("not a JSON array".into());
    };
    if list.is_empty() {
        return Err("an empty array".into());
    }
    if list.len() > MAX_ENTRIES {
        return Err(format!("more than {MAX_ENTRIES} entries"));
    }
    list.into_iter()
        .map(|entry| match entry {
            Value::Object(map) if map.get("type").is_some_and(Value::is_string) => Ok(map),
            Value::Object(_) => Err("an entry has no string \"type\"".to_string()),
            _ => Err("an entry is not a JSON object".to_string()),
        })
        .collect()
}

/// The declared types, with the resources that declared each.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct DetailTypes {
    types: BTreeMap<String, (DetailType, Vec<String>)>,
}

impl DetailTypes {
    /// Adds `resource`'s declaration of a type. Two resources declaring
    /// the same type must declare it alike: a type means one thing here.
    pub fn add(&mut self, resource: &str, declared: DetailType) -> Result<(), String> {
        declared.validate()?;
        match self.types.get_mut(&declared.name) {
            Some((existing, resources)) if *existing == declared => {
                resources.push(resource.to_string());
                Ok(())
            }
            Some(_) => Err(format!(
                "authorization details type {:?} is declared differently by two resources",
                declared.name
            )),
            None => {
                self.types.insert(
                    declared.name.clone(),
                    (declared, vec![resource.to_string()]),
                );
                Ok(())
            }
        }
    }

    /// `authorization_details_types_supported` (RFC 9396 §10).
    pub fn names(&self) -> Vec<&str> {
        self.types.keys().map(String::as_str).collect()
    }

    pub fn get(&self, name: &str) -> Option<&DetailType> {
        self.types.get(name).map(|(t, _)| t)
    }

    /// Each entry in words (entries of an unknown type by their raw JSON,
    /// which only a type removed from the file since can produce).
    pub fn describe(&self, entries: &[Value]) -> Vec<Described> {
        entries
            .iter()
            .map(|entry| {
                let name = entry
                    .get("type")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                match self.get(name) {
                    Some(t) => t.describe(entry),
                    None => Described {
                        kind: name.to_string(),
                        sentence: words(entry),
                        fields: Vec::new(),
                    },
                }
            })
            .collect()
    }

    /// RFC 9396 §5: checks each entry against its type; an entry with no
    /// `locations` gets the one resource that declared its type (several:
    /// it must say which). Locations are rewritten to their registered
    /// spelling.
    pub fn check(&self, entries: Vec<Map<String, Value>>) -> Result<Vec<Value>, String> {
        entries
            .into_iter()
            .map(|mut entry| {
                let name = entry
                    .get("type")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                let Some((declared, resources)) = self.types.get(&name) else {
                    return Err(format!("authorization details type {name:?} is not supported"));
                };
                declared.check(&entry)?;
                let locations = match entry.get("locations").and_then(Value::as_array) {
                    Some(list) if list.is_empty() => {
                        return Err("\"locations\" is empty".into());
                    }
                    Some(list) => list
                        .iter()
                        .filter_map(Value::as_str)
                        .map(|l| {
                            resources
                                .iter()
                                .find(|r| super::same_resource(r, l))
                                .cloned()
                                .ok_or_else(|| {
                                    format!("resource {l:?} does not take details of type {name:?}")
                                })
                        })
                        .collect::<Result<Vec<_>, _>>()?,
                    None => match resources.as_slice() {
                        [only] => vec![only.clone()],
                        _ => {
                            return Err(format!(
                                "several resources take details of type {name:?}; name one in \"locations\""
                            ));
                        }
                    },
                };
                entry.insert("locations".into(), Value::from(locations));
                Ok(Value::Object(entry))
            })
            .collect()
    }
}

/// The resources a set of checked entries is for (their `locations`,
/// each once, in order).
pub fn locations(entries: &[Value]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for l in entries
        .iter()
        .filter_map(|e| e.get("locations").and_then(Value::as_array))
        .flatten()
        .filter_map(Value::as_str)
    {
        if !out.iter().any(|o| o == l) {
            out.push(l.to_string());
        }
    }
    out
}

/// Whether every entry of `requested` is one of `granted` (token exchange
/// may narrow an approval, never widen it).
pub fn within(requested: &[Value], granted: &[Value]) -> bool {
    requested.iter().all(|r| granted.contains(r))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tool_call() -> DetailType {
        toml::from_str(
            r#"
            type = "mcp_tool_call"
            description = "One call of one tool"
            render = "Call {tool} with {arguments}"
            fields.tool = { kind = "string", required = true, max_length = 16 }
            fields.arguments = { kind = "object" }
            "#,
        )
        .unwrap()
    }

    fn types() -> DetailTypes {
        let mut t = DetailTypes::default();
        t.add("https://MCP.example.com/mcp", tool_call()).unwrap();
        t
    }

    fn check(text: &str) -> Result<Vec<Value>, String> {
        types().check(parse(text)?)
    }

    #[test]
    fn a_valid_entry_gets_its_location() {
        let out =
            check(r#"[{"type":"mcp_tool_call","tool":"delete_note","arguments":{"id":"n2"}}]"#)
                .unwrap();
        assert_eq!(out[0]["locations"], json!(["https://MCP.example.com/mcp"]));
        let named = check(
            r#"[{"type":"mcp_tool_call","tool":"x","locations":["https://mcp.example.com/mcp"]}]"#,
        )
        .unwrap();
        assert_eq!(
            named[0]["locations"],
            json!(["https://MCP.example.com/mcp"])
        );
        assert_eq!(locations(&named), ["https://MCP.example.com/mcp"]);
    }

    #[test]
    fn invalid_objects_are_refused() {
        for bad in [
            "{}",
            "[]",
            "not json",
            r#"[1]"#,
            r#"[{"tool":"x"}]"#,
            r#"[{"type":"payment","tool":"x"}]"#,
            r#"[{"type":"mcp_tool_call"}]"#,
            r#"[{"type":"mcp_tool_call","tool":7}]"#,
            r#"[{"type":"mcp_tool_call","tool":"far too long a name"}]"#,
            r#"[{"type":"mcp_tool_call","tool":"x","extra":1}]"#,
            r#"[{"type":"mcp_tool_call","tool":"x","arguments":[]}]"#,
            r#"[{"type":"mcp_tool_call","tool":"x","locations":[]}]"#,
            r#"[{"type":"mcp_tool_call","tool":"x","locations":["https://evil.example/"]}]"#,
            r#"[{"type":"mcp_tool_call","tool":"x","locations":"https://MCP.example.com/mcp"}]"#,
        ] {
            assert!(check(bad).is_err(), "{bad}");
        }
        let many = format!(
            "[{}]",
            [r#"{"type":"mcp_tool_call","tool":"x"}"#; 9].join(",")
        );
        assert!(check(&many).is_err());
        let big = format!(
            r#"[{{"type":"mcp_tool_call","tool":"x","arguments":{{"a":"{}"}}}}]"#,
            "a".repeat(9000)
        );
        assert!(check(&big).is_err());
    }

    #[test]
    fn entries_read_in_words() {
        let entry = json!({"type":"mcp_tool_call","tool":"delete_note","arguments":{"id":"n2"},
                           "locations":["https://mcp.example.com/mcp"]});
        let d = types().describe(&[entry]).remove(0);
        assert_eq!(d.kind, "One call of one tool");
        assert_eq!(d.sentence, r#"Call delete_note with {"id":"n2"}"#);
        assert!(d.fields.contains(&("tool".into(), "delete_note".into())));
        assert!(
            d.fields
                .contains(&("locations".into(), "https://mcp.example.com/mcp".into()))
        );
        let none = types()
            .describe(&[json!({"type":"mcp_tool_call","tool":"list"})])
            .remove(0);
        assert_eq!(none.sentence, "Call list with (not given)");
    }

    #[test]
    fn declarations_are_checked() {
        let mut t = tool_call();
        t.render = "Call {nothing}".into();
        assert!(t.validate().is_err());
        let mut t = tool_call();
        t.fields.insert(
            "locations".into(),
            Field {
                kind: Kind::String,
                required: false,
                max_length: None,
                label: None,
            },
        );
        assert!(t.validate().is_err());
        let mut types = types();
        let mut other = tool_call();
        other.render = "Different".into();
        assert!(types.add("https://b.example/", other).is_err());
        assert!(types.add("https://b.example/", tool_call()).is_ok());
        assert!(
            types
                .check(parse(r#"[{"type":"mcp_tool_call","tool":"x"}]"#).unwrap())
                .is_err(),
            "two resources take the type: locations must say which"
        );
    }

    #[test]
    fn narrowing_keeps_within_the_grant() {
        let a = json!({"type":"mcp_tool_call","tool":"a"});
        let b = json!({"type":"mcp_tool_call","tool":"b"});
        assert!(within(std::slice::from_ref(&a), &[a.clone(), b.clone()]));
        assert!(!within(&[a.clone(), b.clone()], &[a]));
    }
}
