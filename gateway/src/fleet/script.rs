//! The sync script's arguments and reply.

use std::sync::LazyLock;

use breakwater_plugins::fleet::{LeaseAsk, Section, SectionKind, SectionReply};
use redis::{Script, Value};

use super::link::LinkError;

/// The sync script (`sync.lua`), sent once per Redis node and then invoked
/// by its SHA (redis-rs reloads it after a restart: NOSCRIPT → SCRIPT LOAD).
pub static SYNC: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("sync.lua")));

/// What one shard's call carries besides its sections.
pub struct CallHeader<'a> {
    pub base: &'a str,
    pub instance_id: &'a str,
    pub heartbeat: bool,
    pub peer_ttl_ms: u64,
    pub channel: &'a str,
}

/// A shard's sections as the script's ARGV.
pub fn invocation<'s>(head: &CallHeader<'_>, sections: &[Section]) -> redis::ScriptInvocation<'s> {
    let mut inv = SYNC.prepare_invoke();
    inv.key(head.base)
        .arg(head.instance_id)
        .arg(if head.heartbeat { "1" } else { "0" })
        .arg(head.peer_ttl_ms)
        .arg(head.channel)
        .arg(sections.len());
    for s in sections {
        let (kind, threshold, hold, ttl) = match s.kind {
            // The threshold slot carries a counter's N.
            SectionKind::Counter { instances } => ("c", u64::from(instances), 0, 0),
            SectionKind::Hot {
                threshold,
                hold_at,
                hot_ttl_ms,
            } => ("h", threshold, hold_at, hot_ttl_ms),
        };
        inv.arg(kind)
            .arg(&s.policy)
            .arg(s.window_ms.max(1))
            .arg(s.buckets.max(1))
            .arg(s.items.len())
            .arg(threshold)
            .arg(hold)
            .arg(ttl);
        for item in &s.items {
            let lease = item.lease.unwrap_or(LeaseAsk {
                want: 0,
                limit: 0,
                give_back: 0,
                from_bucket: 0,
            });
            inv.arg(hash_hex(item.hash))
                .arg(item.delta)
                .arg(&item.name)
                .arg(lease.give_back)
                .arg(lease.from_bucket)
                .arg(lease.want)
                .arg(lease.limit);
        }
    }
    inv
}

/// A key hash as the script's field names it.
pub fn hash_hex(hash: u64) -> String {
    format!("{hash:016x}")
}

pub fn parse_hash(hex: &str) -> Option<u64> {
    (hex.len() == 16).then(|| u64::from_str_radix(hex, 16).ok())?
}

/// One shard's answer.
#[derive(Debug, Default, PartialEq)]
pub struct CallReply {
    /// `(instance id, last heartbeat ms)`; only from the heartbeat shard.
    pub peers: Vec<(String, u64)>,
    /// Redis's clock, in unix milliseconds.
    pub now_ms: u64,
    pub sections: Vec<SectionReply>,
}

fn bad(what: &str) -> LinkError {
    LinkError::Reply(what.to_string())
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

fn int(v: &Value) -> Option<u64> {
    match v {
        Value::Int(i) => u64::try_from(*i).ok(),
        Value::Double(d) => Some(d.max(0.0) as u64),
        other => text(other)?.parse::<f64>().ok().map(|f| f.max(0.0) as u64),
    }
}

fn array(v: &Value) -> Option<&[Value]> {
    match v {
        Value::Array(a) | Value::Set(a) => Some(a),
        Value::Nil => Some(&[]),
        _ => None,
    }
}

/// Parses the script's reply; `expected` sections must come back.
pub fn parse_reply(v: &Value, expected: usize) -> Result<CallReply, LinkError> {
    let top = array(v).ok_or_else(|| bad("not an array"))?;
    if top.len() != expected + 2 {
        return Err(bad("wrong number of sections"));
    }
    let peers = array(&top[0])
        .ok_or_else(|| bad("peers"))?
        .chunks(2)
        .filter_map(|p| Some((text(p.first()?)?, int(p.get(1)?)?)))
        .collect();
    let now_ms = int(&top[1]).ok_or_else(|| bad("time"))?;
    let mut sections = Vec::with_capacity(expected);
    for s in &top[2..] {
        let parts = array(s).ok_or_else(|| bad("section"))?;
        let totals = parts
            .first()
            .and_then(array)
            .ok_or_else(|| bad("totals"))?
            .iter()
            .map(|t| int(t).ok_or_else(|| bad("total")))
            .collect::<Result<Vec<_>, _>>()?;
        let hot = parts
            .get(1)
            .and_then(array)
            .unwrap_or(&[])
            .chunks(2)
            .filter_map(|p| Some((parse_hash(&text(p.first()?)?)?, text(p.get(1)?)?)))
            .collect();
        let grants = parts
            .get(2)
            .and_then(array)
            .unwrap_or(&[])
            .iter()
            .map(|g| int(g).ok_or_else(|| bad("grant")))
            .collect::<Result<Vec<_>, _>>()?;
        if !grants.is_empty() && grants.len() != totals.len() {
            return Err(bad("grants"));
        }
        let bucket = parts.get(3).and_then(int).unwrap_or(0);
        sections.push(SectionReply {
            totals,
            hot,
            grants,
            bucket,
        });
    }
    Ok(CallReply {
        peers,
        now_ms,
        sections,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn hashes_round_trip_as_fixed_width_hex() {
        for h in [0, 1, u64::MAX, 0xdead_beef] {
            assert_eq!(parse_hash(&hash_hex(h)), Some(h));
        }
        assert_eq!(parse_hash("zz"), None);
        assert_eq!(parse_hash("00000000000000000"), None);
    }

    #[test]
    fn replies_parse_and_malformed_ones_are_errors() {
        let v = Value::Array(vec![
            Value::Array(vec![
                bulk("gw-1"),
                bulk("1700000000000"),
                bulk("gw-2"),
                bulk("17"),
            ]),
            Value::Int(1_700_000_000_123),
            Value::Array(vec![
                Value::Array(vec![Value::Int(3), Value::Int(0)]),
                Value::Array(vec![]),
                Value::Array(vec![Value::Int(5), Value::Int(0)]),
                Value::Int(17_000_000_001),
            ]),
            Value::Array(vec![
                Value::Array(vec![Value::Int(9)]),
                Value::Array(vec![bulk(&hash_hex(42)), bulk("goods:123")]),
            ]),
        ]);
        let r = parse_reply(&v, 2).unwrap();
        assert_eq!(
            r.peers,
            vec![("gw-1".into(), 1_700_000_000_000), ("gw-2".into(), 17)]
        );
        assert_eq!(r.now_ms, 1_700_000_000_123);
        assert_eq!(r.sections[0].totals, vec![3, 0]);
        assert_eq!(r.sections[0].grants, vec![5, 0]);
        assert_eq!(r.sections[0].bucket, 17_000_000_001);
        assert_eq!(r.sections[1].hot, vec![(42, "goods:123".into())]);
        assert!(parse_reply(&v, 3).is_err());
        assert!(parse_reply(&Value::Int(1), 0).is_err());
        let bad_total = Value::Array(vec![
            Value::Array(vec![]),
            Value::Int(1),
            Value::Array(vec![Value::Array(vec![bulk("x")])]),
        ]);
        assert!(parse_reply(&bad_total, 1).is_err());
    }
}
