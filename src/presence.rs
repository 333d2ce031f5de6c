//! Presence and live cursors: who is in a room (names and colours), and where their pointers are.
//!
//! This module owns the defaults a member gets before it names itself (a "Guest NNNN" name and a
//! colour, both derived from its client id, so that every node of a cluster shows the same ones),
//! the cap on the presence list, the list the members were last shown ([`ShownPresence`]: a
//! newcomer gets it whole in `presence`, everyone else only what changed in `presenceChange`), the
//! encoding of `presence`, `presenceChange` and `cursor` frames, and the cursor buffer that keeps
//! only the latest position of each member per [`CURSOR_TICK`]. It is pure (no actors, no I/O): the
//! room decides when to send. It must never store a cursor anywhere but the buffer of the current
//! tick (cursors are disposable: never recorded, checkpointed or persisted), never let the list
//! grow with the room beyond [`MAX_PRESENCE_MEMBERS`], and never send the whole list to members
//! who have it: a change costs each member bytes in proportion to the change, not to the room.

use std::borrow::Cow;
use std::collections::HashMap;
use std::time::Duration;

use bytestring::ByteString;
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::protocol::{PresenceMember, ServerMessage};

/// A `presence` message lists at most this many members (the first to join) and the room's total:
/// a 10,000-member room sends about 20 KB per change, not megabytes.
pub const MAX_PRESENCE_MEMBERS: usize = 200;
/// Cursor moves are gathered this long and only the latest of each member goes out: 20 updates a
/// second, smooth enough for a pointer, whatever a client sends.
pub const CURSOR_TICK: Duration = Duration::from_millis(50);
/// A client may send this many cursor messages a second (with a burst of
/// `CURSOR_BURST_MESSAGES`); the rest are dropped silently, never answered with an error or a close:
/// a cursor is disposable and the next one replaces it anyway.
pub const CURSORS_PER_SECOND: u32 = 30;
pub const CURSOR_BURST_MESSAGES: u32 = 10;

/// How a member is shown to the others: its default name and colour follow from its id, so a member
/// keeps only a name it chose (a big room's members mostly never choose one).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    chosen_name: Option<Box<str>>,
}

impl Identity {
    /// The member `id`'s name: the one it chose, else its default.
    pub fn name(&self, id: Uuid) -> Cow<'_, str> {
        match &self.chosen_name {
            Some(name) => Cow::Borrowed(name),
            None => Cow::Owned(default_name(id)),
        }
    }

    /// Names the member; `false` when that is its name already.
    pub fn rename(&mut self, id: Uuid, name: String) -> bool {
        if self.name(id) == name.as_str() {
            return false;
        }
        self.chosen_name = Some(name.into_boxed_str());
        true
    }
}

/// "Guest 1000" to "Guest 9999", from the client id: the same on every node of a cluster.
pub fn default_name(id: Uuid) -> String {
    let bytes = id.as_bytes();
    let number = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) % 9000 + 1000;
    format!("Guest {number}")
}

/// A pleasant `#rrggbb` from the client id: any hue, a saturation and lightness that read well as a
/// dot and a label on white.
pub fn color_of(id: Uuid) -> String {
    let bytes = id.as_bytes();
    let hue = f64::from(u16::from_be_bytes([bytes[14], bytes[15]]) % 360);
    let (r, g, b) = hsl_to_rgb(hue, 0.65, 0.45);
    format!("#{r:02x}{g:02x}{b:02x}")
}

/// HSL (hue in degrees, saturation and lightness in 0..=1) to 8-bit RGB.
fn hsl_to_rgb(hue: f64, saturation: f64, lightness: f64) -> (u8, u8, u8) {
    let chroma = (1.0 - (2.0 * lightness - 1.0).abs()) * saturation;
    let sector = hue / 60.0;
    let x = chroma * (1.0 - (sector % 2.0 - 1.0).abs());
    let (r, g, b) = match sector as u32 {
        0 => (chroma, x, 0.0),
        1 => (x, chroma, 0.0),
        2 => (0.0, chroma, x),
        3 => (0.0, x, chroma),
        4 => (x, 0.0, chroma),
        _ => (chroma, 0.0, x),
    };
    let m = lightness - chroma / 2.0;
    let channel = |v: f64| ((v + m) * 255.0).round().clamp(0.0, 255.0) as u8;
    (channel(r), channel(g), channel(b))
}

/// The `presence` frame for `members` (already capped) out of `total`.
fn presence_frame(members: &[PresenceMember], total: usize) -> ByteString {
    ServerMessage::Presence { members, total }.encode()
}

/// What changed between two presence lists, as `presenceChange` says it.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PresenceChange {
    /// Listed now and not before (a newcomer, or a member moved up into the capped list).
    pub joined: Vec<PresenceMember>,
    /// Listed before and not now (gone, or pushed out of the capped list).
    pub left: Vec<Uuid>,
    /// Listed in both, with another name or colour.
    pub renamed: Vec<PresenceMember>,
}

impl PresenceChange {
    /// From the list `before` to the list `after` (both at most `MAX_PRESENCE_MEMBERS` long).
    pub fn between(before: &[PresenceMember], after: &[PresenceMember]) -> Self {
        let old: HashMap<Uuid, &PresenceMember> = before.iter().map(|m| (m.client_id, m)).collect();
        let new: HashMap<Uuid, &PresenceMember> = after.iter().map(|m| (m.client_id, m)).collect();
        let mut change = PresenceChange::default();
        for member in after {
            match old.get(&member.client_id) {
                None => change.joined.push(member.clone()),
                Some(was) if *was != member => change.renamed.push(member.clone()),
                Some(_) => {}
            }
        }
        change.left = before
            .iter()
            .filter(|m| !new.contains_key(&m.client_id))
            .map(|m| m.client_id)
            .collect();
        change
    }

    pub fn is_empty(&self) -> bool {
        self.joined.is_empty() && self.left.is_empty() && self.renamed.is_empty()
    }
}

/// A member as the list showed it, kept between changes: a default name or colour (which follow
/// from the id) is not stored, so a room of guests keeps no string per member.
#[derive(Debug, PartialEq, Eq)]
struct Listed {
    client_id: Uuid,
    name: Option<Box<str>>,
    color: Option<Box<str>>,
}

impl Listed {
    fn from(member: PresenceMember) -> Self {
        let id = member.client_id;
        let chosen = |value: String, default: String| (value != default).then(|| value.into());
        Listed {
            client_id: id,
            name: chosen(member.name, default_name(id)),
            color: chosen(member.color, color_of(id)),
        }
    }

    fn member(&self) -> PresenceMember {
        let id = self.client_id;
        PresenceMember {
            client_id: id,
            name: self
                .name
                .as_deref()
                .map_or_else(|| default_name(id), str::to_owned),
            color: self
                .color
                .as_deref()
                .map_or_else(|| color_of(id), str::to_owned),
        }
    }

    fn expand(listed: &[Listed]) -> Vec<PresenceMember> {
        listed.iter().map(Listed::member).collect()
    }
}

/// The presence list as the members were last shown it, and the room's total then. A newcomer
/// gets it whole (encoded once for the newcomers arriving together, see [`Self::forget_frame`]);
/// the others get only what changed.
#[derive(Default)]
pub struct ShownPresence {
    members: Vec<Listed>,
    total: usize,
    /// The `presence` frame of `members` and `total`, once a newcomer asked for it.
    frame: Option<ByteString>,
}

impl ShownPresence {
    /// The whole list, for a newcomer: the base that later `presenceChange`s apply to; and whether
    /// it was encoded now rather than kept from an earlier newcomer (see [`Self::forget_frame`]).
    pub fn full_frame(&mut self) -> (ByteString, bool) {
        let encoded = self.frame.is_none();
        let frame = self
            .frame
            .get_or_insert_with(|| presence_frame(&Listed::expand(&self.members), self.total))
            .clone();
        (frame, encoded)
    }

    /// Drops the kept `presence` frame: newcomers arriving together share one encoding, but an idle
    /// room should not hold a copy of its list for the next one.
    pub fn forget_frame(&mut self) {
        self.frame = None;
    }

    /// Moves on to `members` (capped) out of `total`; the `presenceChange` frame for the members
    /// who were shown the list before, when the list itself changed (beyond the cap, a join or a
    /// leave changes only the total, which `clientCount` carries).
    pub fn update(&mut self, members: Vec<PresenceMember>, total: usize) -> Option<ByteString> {
        let change = PresenceChange::between(&Listed::expand(&self.members), &members);
        if change.is_empty() && total == self.total {
            return None;
        }
        self.members = members.into_iter().map(Listed::from).collect();
        self.total = total;
        self.frame = None;
        (!change.is_empty()).then(|| {
            ServerMessage::PresenceChange {
                joined: &change.joined,
                left: &change.left,
                renamed: &change.renamed,
                total,
            }
            .encode()
        })
    }

    /// How many members the list was last shown with.
    #[cfg(test)]
    pub fn total(&self) -> usize {
        self.total
    }
}

/// The first `MAX_PRESENCE_MEMBERS` of a node's members, as listed in `presence`.
pub fn roster<'a>(members: impl Iterator<Item = (Uuid, &'a Identity)>) -> Vec<PresenceMember> {
    members
        .take(MAX_PRESENCE_MEMBERS)
        .map(|(client_id, identity)| PresenceMember {
            client_id,
            name: identity.name(client_id).into_owned(),
            color: color_of(client_id),
        })
        .collect()
}

/// The room-wide list from the nodes' rosters as the cluster publishes them (a JSON array of each
/// live node's array), capped; `None` when the text is not such a list.
pub fn merge_rosters(json: &str) -> Option<Vec<PresenceMember>> {
    let nodes: Vec<Vec<PresenceMember>> = serde_json::from_str(json).ok()?;
    Some(
        nodes
            .into_iter()
            .flatten()
            .take(MAX_PRESENCE_MEMBERS)
            .collect(),
    )
}

/// The latest cursor frame of each member that moved during the current tick, in the order they
/// first moved. Small (one entry per moving member), and emptied every tick.
#[derive(Default)]
pub struct CursorBuffer {
    latest: Vec<(Uuid, ByteString)>,
    /// A flush is scheduled.
    pub scheduled: bool,
}

impl CursorBuffer {
    /// Keeps `frame` as `from`'s position, replacing an earlier one of this tick.
    pub fn put(&mut self, from: Uuid, frame: ByteString) {
        match self.latest.iter_mut().find(|(id, _)| *id == from) {
            Some(entry) => entry.1 = frame,
            None => self.latest.push((from, frame)),
        }
    }

    /// Drops `id`'s position (it left: its cursor goes no further).
    pub fn forget(&mut self, id: Uuid) {
        self.latest.retain(|(from, _)| *from != id);
    }

    /// Everything gathered this tick, leaving the buffer empty.
    pub fn take(&mut self) -> Vec<(Uuid, ByteString)> {
        self.scheduled = false;
        std::mem::take(&mut self.latest)
    }
}

/// A cursor frame for the others: encoded once, with the mover's current name.
pub fn cursor_frame(from: Uuid, identity: &Identity, x: f64, y: f64) -> ByteString {
    ServerMessage::Cursor {
        client_id: from,
        name: &identity.name(from),
        x,
        y,
    }
    .encode()
}

/// The cluster payload for one node's cursors of a tick: a JSON array of the frames as they are.
pub fn cursors_payload<'a>(frames: impl Iterator<Item = &'a ByteString>) -> String {
    let mut payload = String::from("[");
    for (i, frame) in frames.enumerate() {
        if i > 0 {
            payload.push(',');
        }
        payload.push_str(frame);
    }
    payload.push(']');
    payload
}

/// The frames of a cursors payload from another node; `None` if it is not a JSON array of objects
/// of type `cursor` (whatever else is on the channel is not relayed to clients).
pub fn parse_cursors_payload(json: &str) -> Option<Vec<ByteString>> {
    #[derive(serde::Deserialize)]
    struct Kind<'a> {
        #[serde(rename = "type", borrow)]
        kind: &'a str,
    }
    let frames: Vec<&RawValue> = serde_json::from_str(json).ok()?;
    frames
        .into_iter()
        .map(|raw| {
            let kind: Kind<'_> = serde_json::from_str(raw.get()).ok()?;
            (kind.kind == "cursor").then(|| ByteString::from(raw.get().to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_a_guest_number_and_a_hex_colour_derived_from_the_id() {
        let id = Uuid::new_v4();
        let name = Identity::default().name(id).into_owned();
        assert_eq!(name, Identity::default().name(id));
        let number: u32 = name["Guest ".len()..].parse().unwrap();
        assert!((1000..=9999).contains(&number));
        let color = color_of(id);
        assert_eq!(color, color_of(id));
        assert_eq!(color.len(), 7);
        assert!(color.starts_with('#'));
        assert!(color[1..].bytes().all(|b| b.is_ascii_hexdigit()));
    }

    #[test]
    fn a_chosen_name_replaces_the_default_and_the_same_name_changes_nothing() {
        let id = Uuid::new_v4();
        let mut identity = Identity::default();
        let default = identity.name(id).into_owned();
        assert!(!identity.rename(id, default.clone()));
        assert_eq!(identity, Identity::default());
        assert!(identity.rename(id, "Ada".to_owned()));
        assert_eq!(identity.name(id), "Ada");
        assert!(!identity.rename(id, "Ada".to_owned()));
    }

    #[test]
    fn the_shown_list_gives_back_chosen_and_default_names_and_colours_alike() {
        let (guest, named) = (Uuid::new_v4(), Uuid::new_v4());
        let members = vec![
            PresenceMember {
                client_id: guest,
                name: default_name(guest),
                color: color_of(guest),
            },
            PresenceMember {
                client_id: named,
                name: "Ada".to_owned(),
                color: "#123456".to_owned(),
            },
        ];
        let listed: Vec<Listed> = members.iter().cloned().map(Listed::from).collect();
        assert_eq!((&listed[0].name, &listed[0].color), (&None, &None));
        assert_eq!(listed[1].name.as_deref(), Some("Ada"));
        assert_eq!(Listed::expand(&listed), members);
    }

    #[test]
    fn hsl_primary_hues_come_out_as_expected() {
        assert_eq!(hsl_to_rgb(0.0, 1.0, 0.5), (255, 0, 0));
        assert_eq!(hsl_to_rgb(120.0, 1.0, 0.5), (0, 255, 0));
        assert_eq!(hsl_to_rgb(240.0, 1.0, 0.5), (0, 0, 255));
        assert_eq!(hsl_to_rgb(359.0, 0.0, 1.0), (255, 255, 255));
    }

    #[test]
    fn the_buffer_keeps_only_the_latest_cursor_of_each_member() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let mut buffer = CursorBuffer::default();
        buffer.put(a, ByteString::from_static("1"));
        buffer.put(b, ByteString::from_static("2"));
        buffer.put(a, ByteString::from_static("3"));
        let taken = buffer.take();
        assert_eq!(
            taken,
            vec![
                (a, ByteString::from_static("3")),
                (b, ByteString::from_static("2"))
            ]
        );
        assert!(buffer.take().is_empty());
    }

    #[test]
    fn a_cursors_payload_round_trips_and_garbage_does_not() {
        let identity = Identity::default();
        let frames = [
            cursor_frame(Uuid::new_v4(), &identity, 1.0, 2.0),
            cursor_frame(Uuid::new_v4(), &identity, 3.0, 4.0),
        ];
        let payload = cursors_payload(frames.iter());
        assert_eq!(parse_cursors_payload(&payload), Some(frames.to_vec()));
        assert_eq!(parse_cursors_payload("[]"), Some(Vec::new()));
        for bad in ["", "{}", "[1]", r#"[{"type":"draw"}]"#, "[{"] {
            assert_eq!(parse_cursors_payload(bad), None, "{bad}");
        }
    }

    fn member(i: u128) -> PresenceMember {
        PresenceMember {
            client_id: Uuid::from_u128(i),
            name: format!("n{i}"),
            color: "#000000".into(),
        }
    }

    #[test]
    fn a_change_names_who_joined_left_and_renamed() {
        let before = vec![member(1), member(2), member(3)];
        let mut renamed = member(3);
        renamed.name = "Ada".into();
        let after = vec![member(1), renamed.clone(), member(4)];
        let change = PresenceChange::between(&before, &after);
        assert_eq!(change.joined, vec![member(4)]);
        assert_eq!(change.left, vec![Uuid::from_u128(2)]);
        assert_eq!(change.renamed, vec![renamed]);
        assert!(PresenceChange::between(&after, &after).is_empty());
    }

    #[test]
    fn the_shown_list_sends_only_what_changed() {
        let mut shown = ShownPresence::default();
        let first = shown
            .update(vec![member(1)], 1)
            .expect("a join is a change");
        let json: serde_json::Value = serde_json::from_str(&first).unwrap();
        assert_eq!(json["type"], "presenceChange");
        assert_eq!(
            json["joined"][0]["clientId"],
            Uuid::from_u128(1).to_string()
        );
        assert!(
            json.get("left").is_none(),
            "empty parts are left out: {first}"
        );
        assert_eq!(json["total"], 1);
        assert_eq!(shown.update(vec![member(1)], 1), None, "nothing changed");
        let full: serde_json::Value = serde_json::from_str(&shown.full_frame().0).unwrap();
        assert_eq!(full["type"], "presence");
        assert_eq!(full["members"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn beyond_the_cap_a_join_changes_only_the_total() {
        let listed: Vec<_> = (0..MAX_PRESENCE_MEMBERS as u128).map(member).collect();
        let mut shown = ShownPresence::default();
        shown.update(listed.clone(), MAX_PRESENCE_MEMBERS);
        assert_eq!(shown.update(listed.clone(), MAX_PRESENCE_MEMBERS + 1), None);
        assert_eq!(shown.total(), MAX_PRESENCE_MEMBERS + 1);
        let full: serde_json::Value = serde_json::from_str(&shown.full_frame().0).unwrap();
        assert_eq!(
            full["total"],
            MAX_PRESENCE_MEMBERS + 1,
            "a newcomer sees the new total"
        );
    }

    #[test]
    fn merged_rosters_are_flattened_and_capped() {
        let node = |from: u128| (from..from + 150).map(member).collect::<Vec<_>>();
        let json = serde_json::to_string(&vec![node(0), node(1000)]).unwrap();
        let merged = merge_rosters(&json).unwrap();
        assert_eq!(merged.len(), MAX_PRESENCE_MEMBERS);
        assert_eq!(merged[150], member(1000));
        assert_eq!(merge_rosters("nope"), None);
    }
}
