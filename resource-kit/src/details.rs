//! RFC 9396 rich authorization details, as agentauth tokens carry them
//! (`authorization_details`, §9.1), and the one type this kit knows how
//! to enforce: [`MCP_TOOL_CALL`], one call of one MCP tool with exactly
//! these arguments.
//!
//! ```json
//! {
//!   "type": "mcp_tool_call",
//!   "locations": ["https://mcp.example.com/mcp"],
//!   "tool": "delete_note",
//!   "arguments": {"id": "n2"}
//! }
//! ```
//!
//! The owner sees the tool and its arguments when approving; the resource
//! compares the call it receives with them. Arguments are compared by
//! the SHA-256 of their RFC 8785 (JCS) canonical form, so that key order,
//! white space and `1` against `1.0` do not matter and nothing else does.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;

/// The `type` of an approval for one MCP tool call.
pub const MCP_TOOL_CALL: &str = "mcp_tool_call";

/// The base64url SHA-256 of the RFC 8785 canonical form of `value`.
/// `None` only for a value JCS cannot represent (a number out of range),
/// which no parsed JSON holds.
pub fn digest(value: &Value) -> Option<String> {
    let canonical = serde_jcs::to_vec(value).ok()?;
    let hash = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &canonical);
    Some(URL_SAFE_NO_PAD.encode(hash.as_ref()))
}

/// One approved MCP tool call, read from an `authorization_details` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ToolCall {
    pub tool: String,
    /// [`digest`] of the approved arguments (`{}` when none were given).
    pub arguments_digest: String,
    /// RFC 9396 §2.2 `locations`: the resources it is for (empty: any of
    /// the token's audiences).
    pub locations: Vec<String>,
}

impl ToolCall {
    /// The entry as a tool call, when it is of type [`MCP_TOOL_CALL`] and
    /// well formed (`tool` a string; `arguments`, if any, an object).
    pub fn from_entry(entry: &Value) -> Option<Self> {
        if entry.get("type")?.as_str()? != MCP_TOOL_CALL {
            return None;
        }
        let tool = entry.get("tool")?.as_str()?.to_string();
        let arguments = match entry.get("arguments") {
            None | Some(Value::Null) => Value::Object(Default::default()),
            Some(a @ Value::Object(_)) => a.clone(),
            Some(_) => return None,
        };
        let locations = match entry.get("locations") {
            None => Vec::new(),
            Some(Value::Array(list)) => list
                .iter()
                .map(|l| l.as_str().map(str::to_string))
                .collect::<Option<_>>()?,
            Some(_) => return None,
        };
        Some(Self {
            tool,
            arguments_digest: digest(&arguments)?,
            locations,
        })
    }

    /// The entry that approves this call (for the resource of
    /// `resource`), built by a resource that refuses an unapproved call so
    /// that the client can ask for exactly it.
    pub fn entry(resource: &str, tool: &str, arguments: &Value) -> Value {
        let arguments = match arguments {
            Value::Null => Value::Object(Default::default()),
            a => a.clone(),
        };
        serde_json::json!({
            "type": MCP_TOOL_CALL,
            "locations": [resource],
            "tool": tool,
            "arguments": arguments,
        })
    }

    /// Whether this approval covers calling `tool` with `arguments` at
    /// `resource`.
    pub fn covers(&self, resource: &str, tool: &str, arguments: &Value) -> bool {
        let arguments = match arguments {
            Value::Null => &Value::Object(Default::default()),
            a => a,
        };
        self.tool == tool
            && (self.locations.is_empty() || self.locations.iter().any(|l| l == resource))
            && digest(arguments).is_some_and(|d| d == self.arguments_digest)
    }
}

/// The approved tool calls among a token's `authorization_details`.
pub fn tool_calls(details: Option<&[Value]>) -> Vec<ToolCall> {
    details
        .unwrap_or_default()
        .iter()
        .filter_map(ToolCall::from_entry)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn arguments_compare_canonically() {
        let approved = ToolCall::from_entry(&json!({
            "type": "mcp_tool_call", "tool": "pay",
            "arguments": {"to": "bob", "amount": 1.0, "memo": {"b": 2, "a": 1}}
        }))
        .unwrap();
        assert!(approved.covers(
            "r",
            "pay",
            &json!({"memo": {"a": 1, "b": 2}, "amount": 1, "to": "bob"})
        ));
        assert!(!approved.covers("r", "pay", &json!({"to": "bob", "amount": 2})));
        assert!(!approved.covers(
            "r",
            "refund",
            &json!({"memo": {"a": 1, "b": 2}, "amount": 1, "to": "bob"})
        ));
    }

    #[test]
    fn locations_bind_the_resource() {
        let entry = ToolCall::entry("https://mcp.example/mcp", "delete_note", &Value::Null);
        let approved = ToolCall::from_entry(&entry).unwrap();
        assert!(approved.covers("https://mcp.example/mcp", "delete_note", &json!({})));
        assert!(!approved.covers("https://other.example/mcp", "delete_note", &json!({})));
    }

    #[test]
    fn other_types_and_bad_shapes_are_not_tool_calls() {
        assert!(
            ToolCall::from_entry(&json!({"type": "payment_initiation", "tool": "x"})).is_none()
        );
        assert!(ToolCall::from_entry(&json!({"type": "mcp_tool_call", "tool": 7})).is_none());
        assert!(
            ToolCall::from_entry(&json!({"type": "mcp_tool_call", "tool": "x", "arguments": [1]}))
                .is_none()
        );
        assert_eq!(tool_calls(None), vec![]);
    }
}
