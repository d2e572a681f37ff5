//! The events instances trade over Redis pub/sub: hot and cooled keys
//! (published by the sync script when a fleet total crosses a line) and
//! blocks (published by the instance that places or removes one).

use serde::{Deserialize, Serialize};

/// One event on the channel. Hot and cooled events come from the sync
/// script (`hash` in hex); block events from instances.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum FleetEvent {
    Hot {
        rule: String,
        hash: String,
        key: String,
        #[serde(default)]
        count: u64,
        from: String,
    },
    Cooled {
        rule: String,
        hash: String,
        key: String,
        from: String,
    },
    Block {
        /// The key's text, cut to `KEY_TEXT_MAX` bytes.
        key: String,
        /// The fleet hash of the full key (16 hex digits): the block's
        /// identity, since a cut key no longer hashes to it. Absent from
        /// instances that sent the full key instead.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        hash: Option<String>,
        reason: String,
        source: String,
        status: u16,
        /// Wall-clock expiry, unix ms: every instance ends the block at the
        /// same time (up to clock skew), so the TTL is kept.
        expires_at_ms: u64,
        from: String,
    },
    Unblock {
        key: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        hash: Option<String>,
        from: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_read_what_the_script_and_instances_write() {
        let hot: FleetEvent = serde_json::from_str(
            r#"{"t":"hot","rule":"goods.hot","hash":"00000000000000ff","key":"123","count":40,"from":"gw-1"}"#,
        )
        .unwrap();
        assert!(matches!(hot, FleetEvent::Hot { ref rule, count: 40, .. } if rule == "goods.hot"));
        // cjson writes an empty key as "" and may omit nothing else.
        let cooled: FleetEvent =
            serde_json::from_str(r#"{"t":"cooled","rule":"r","hash":"00000000000000ff","key":"","count":0,"from":"gw-2"}"#)
                .unwrap();
        assert!(matches!(cooled, FleetEvent::Cooled { .. }));
        let block = FleetEvent::Block {
            key: "ip:203.0.113.7".into(),
            hash: Some("00000000000000ff".into()),
            reason: "abuse".into(),
            source: "crawler".into(),
            status: 403,
            expires_at_ms: 1,
            from: "gw-1".into(),
        };
        let text = serde_json::to_string(&block).unwrap();
        assert!(text.contains(r#""t":"block""#));
        assert_eq!(serde_json::from_str::<FleetEvent>(&text).unwrap(), block);
        assert!(serde_json::from_str::<FleetEvent>(r#"{"t":"nope"}"#).is_err());
        // An instance that names blocks by their full text only.
        let old: FleetEvent = serde_json::from_str(
            r#"{"t":"block","key":"user:a","reason":"r","source":"s","status":403,"expires_at_ms":1,"from":"gw-0"}"#,
        )
        .unwrap();
        assert!(matches!(old, FleetEvent::Block { hash: None, .. }));
    }
}
