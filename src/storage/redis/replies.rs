//! Reading what Redis answers and publishes: the scripts' replies and the room channel's messages.
//! Anything unexpected is an error or `None`, never a panic: Redis is another process.

use super::*;

/// Redis's error code for a script it does not have (after a restart).
pub(super) const NO_SCRIPT: &str = "NOSCRIPT";

pub(super) fn is_no_script(result: &Result<u64, StoreError>) -> bool {
    matches!(result, Err(StoreError::Redis { detail }) if detail == NO_SCRIPT)
}

/// `o:<seq>:<from>:<json>`, `c:<version>:<count>`, `k:<seq>`, `p:<version>:<json>`,
/// `u:<node>:<json>` or `m:<action>`.
pub(super) fn parse_message(payload: &[u8]) -> Option<Relayed> {
    let text = std::str::from_utf8(payload).ok()?;
    let (kind, rest) = text.split_once(':')?;
    match kind {
        "o" => {
            let mut parts = rest.splitn(3, ':');
            let seq = parts.next()?.parse().ok()?;
            let from = parts.next()?;
            let frame = parts.next()?;
            Some(Relayed::Op {
                seq,
                from: Uuid::parse_str(from).ok(),
                frame: ByteString::from(frame.to_string()),
            })
        }
        "c" => {
            let (version, total) = rest.split_once(':')?;
            Some(Relayed::Count {
                version: version.parse().ok()?,
                total: total.parse().ok()?,
            })
        }
        "k" => rest.parse().ok().map(Relayed::Checkpoint),
        "m" => Moderation::from_wire(rest).map(Relayed::Moderated),
        "p" => {
            let (version, rosters) = rest.split_once(':')?;
            Some(Relayed::Roster {
                version: version.parse().ok()?,
                rosters: rosters.to_string(),
            })
        }
        "u" => {
            let (node, frames) = rest.split_once(':')?;
            Some(Relayed::Cursors {
                node: node.to_string(),
                frames: crate::presence::parse_cursors_payload(frames)?,
            })
        }
        _ => None,
    }
}

pub(super) fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
        Value::SimpleString(text) => Some(text.clone()),
        Value::Int(n) => Some(n.to_string()),
        _ => None,
    }
}

pub(super) fn number(value: &Value) -> Result<u64, String> {
    text(value)
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| format!("not a number: {value:?}"))
}

pub(super) fn parse_load(
    answer: Value,
    limit: usize,
    room: &str,
) -> Result<Option<StoredRoom>, StoreError> {
    let unexpected = || redis_error(format_args!("room={room}: an unexpected answer to a load"));
    let Value::Array(parts) = answer else {
        return Err(unexpected());
    };
    match parts.first().and_then(text).as_deref() {
        Some("missing") => return Ok(None),
        Some("too_many") => return Err(StoreError::TooManyRooms { limit }),
        Some("existed" | "created") => {}
        _ => return Err(unexpected()),
    }
    let [status, cp_seq, png, _head, ops] = parts.as_slice() else {
        return Err(unexpected());
    };
    let checkpoint = match png {
        Value::BulkString(bytes) if !bytes.is_empty() => Some(bytes.clone()),
        _ => None,
    };
    let ops = parse_entries(ops).map_err(redis_error)?;
    let stored_bytes = checkpoint.as_ref().map_or(0, |p| p.len() as u64)
        + ops.iter().map(|op| op.frame.len() as u64).sum::<u64>();
    Ok(Some(StoredRoom {
        checkpoint,
        checkpoint_seq: number(cp_seq).map_err(redis_error)?,
        ops: ops
            .into_iter()
            .map(|op| (op.seq, op.frame.to_string()))
            .collect(),
        stored_bytes,
        existed: text(status).as_deref() == Some("existed"),
    }))
}

pub(super) fn parse_after(answer: Value) -> Result<CatchUp, String> {
    let Value::Array(parts) = answer else {
        return Err("an unexpected answer".into());
    };
    match parts.first().and_then(text).as_deref() {
        Some("ahead") => Ok(CatchUp::Ahead),
        Some("behind") => Ok(CatchUp::Behind),
        Some("ops") => parts
            .get(2)
            .ok_or_else(|| "an unexpected answer".to_string())
            .and_then(parse_entries)
            .map(CatchUp::Ops),
        _ => Err("an unexpected answer".into()),
    }
}

/// XRANGE's answer: `[[id, [field, value, ...]], ...]`, IDs `0-<seq>`.
pub(super) fn parse_entries(value: &Value) -> Result<Vec<RelayedOp>, String> {
    let Value::Array(entries) = value else {
        return Err("an unexpected stream answer".into());
    };
    entries
        .iter()
        .map(|entry| {
            let Value::Array(pair) = entry else {
                return Err("an unexpected stream entry".to_string());
            };
            let [id, Value::Array(fields)] = pair.as_slice() else {
                return Err("an unexpected stream entry".to_string());
            };
            let id = text(id).ok_or("an unreadable stream ID")?;
            let seq = id
                .strip_prefix("0-")
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| format!("an unexpected stream ID {id}"))?;
            let (mut frame, mut from) = (None, None);
            for pair in fields.chunks(2) {
                if let [name, value] = pair {
                    match text(name).as_deref() {
                        Some("o") => frame = text(value),
                        Some("f") => from = text(value).and_then(|f| Uuid::parse_str(&f).ok()),
                        _ => {}
                    }
                }
            }
            let frame = frame.ok_or_else(|| format!("operation {seq} has no JSON"))?;
            Ok(RelayedOp {
                seq,
                from,
                frame: ByteString::from(frame),
            })
        })
        .collect()
}
