//! Moderation: what a private room's owner and the server's operator may do to a room (replace
//! its links, lock it, remove a member, delete it for good), as a room carries it out and as it
//! crosses a cluster.
//!
//! It owns a member's standing in its room ([`Standing`]), the actions ([`Moderation`]), the close
//! codes and reasons members get for them, their form on a room's cluster channel, and the log
//! line each action leaves. It must never carry, log or compare a token: an action names who did
//! it only by the kind of token they showed (see `http::access` for the tokens themselves).

use actix_http::ws::CloseCode;
use uuid::Uuid;

/// What a member's link makes of it in its room. One byte, where the session kept a read-only
/// flag: a room's lock is one flag in the room, checked against this on each operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// A public room: everyone draws, nobody moderates.
    Anyone,
    /// A private room's owner: draws, also while the room is locked, and moderates.
    Owner,
    /// Came in with a private room's edit link.
    Editor,
    /// Came in with a private room's view link: watches only.
    Viewer,
}

impl Standing {
    /// Watches only, whatever the room's lock.
    pub fn read_only(self) -> bool {
        self == Standing::Viewer
    }

    /// Admitted with one of the links the owner can replace (closed when they are).
    pub fn holds_a_link(self) -> bool {
        matches!(self, Standing::Editor | Standing::Viewer)
    }
}

/// What was done to a room; every node with members in it carries it out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Moderation {
    /// The edit and view links were replaced: members admitted with the old ones are closed.
    LinksReplaced,
    /// While locked, only the owner may change the canvas.
    Locked(bool),
    /// The member with this client id is closed.
    Removed(Uuid),
    /// The room is gone for good: every member is closed and nothing of it is kept.
    Deleted,
}

/// Close code of a member admitted with a link the owner replaced (4000-4999: the application's own).
pub const LINK_WITHDRAWN_CODE: u16 = 4001;
/// Close code of a member the owner removed.
pub const REMOVED_CODE: u16 = 4002;
/// Close code of every member of a room the operator deleted.
pub const DELETED_CODE: u16 = 4004;

pub const LINK_WITHDRAWN_REASON: &str = "the owner withdrew this link; ask them for the new one";
pub const REMOVED_REASON: &str = "the room's owner removed you from the room";
pub const DELETED_REASON: &str = "this room was deleted by the server's operator";

impl Moderation {
    /// Whether `standing` is closed by this action, and with what.
    pub fn closes(self, id: Uuid, standing: Standing) -> Option<(CloseCode, &'static str)> {
        match self {
            Moderation::LinksReplaced if standing.holds_a_link() => {
                Some((CloseCode::Other(LINK_WITHDRAWN_CODE), LINK_WITHDRAWN_REASON))
            }
            Moderation::Removed(removed) if removed == id => {
                Some((CloseCode::Other(REMOVED_CODE), REMOVED_REASON))
            }
            Moderation::Deleted => Some((CloseCode::Other(DELETED_CODE), DELETED_REASON)),
            _ => None,
        }
    }

    /// Its form on a room's cluster channel (after the `m:` kind): `links`, `lock:1`, `lock:0`,
    /// `kick:<client id>` or `deleted`.
    pub fn to_wire(self) -> String {
        match self {
            Moderation::LinksReplaced => "links".into(),
            Moderation::Locked(locked) => format!("lock:{}", u8::from(locked)),
            Moderation::Removed(id) => format!("kick:{id}"),
            Moderation::Deleted => "deleted".into(),
        }
    }

    /// The action `wire` names; `None` for anything else (another process wrote it).
    pub fn from_wire(wire: &str) -> Option<Moderation> {
        match wire {
            "links" => Some(Moderation::LinksReplaced),
            "lock:1" => Some(Moderation::Locked(true)),
            "lock:0" => Some(Moderation::Locked(false)),
            "deleted" => Some(Moderation::Deleted),
            other => Uuid::parse_str(other.strip_prefix("kick:")?)
                .ok()
                .map(Moderation::Removed),
        }
    }

    /// What the log calls it.
    fn action(self) -> String {
        match self {
            Moderation::LinksReplaced => "links replaced".into(),
            Moderation::Locked(true) => "locked".into(),
            Moderation::Locked(false) => "unlocked".into(),
            Moderation::Removed(id) => format!("removed client={id}"),
            Moderation::Deleted => "deleted".into(),
        }
    }
}

/// Who asked for an action, by the kind of token they showed (never the token).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Moderator {
    Owner,
    Admin,
}

/// The log line of an action taken: the room, what, and by which kind of token.
pub fn log_action(room: &str, action: Moderation, by: Moderator) {
    let by = match by {
        Moderator::Owner => "owner token",
        Moderator::Admin => "admin token",
    };
    log::info!("room={room} moderation: {} by {by}", action.action());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_action_survives_the_channel() {
        let id = Uuid::new_v4();
        for action in [
            Moderation::LinksReplaced,
            Moderation::Locked(true),
            Moderation::Locked(false),
            Moderation::Removed(id),
            Moderation::Deleted,
        ] {
            assert_eq!(Moderation::from_wire(&action.to_wire()), Some(action));
        }
        for junk in ["", "lock:2", "kick:", "kick:not-a-uuid", "link"] {
            assert_eq!(Moderation::from_wire(junk), None, "{junk:?}");
        }
    }

    #[test]
    fn replacing_the_links_closes_link_holders_and_not_the_owner() {
        let id = Uuid::new_v4();
        let replaced = Moderation::LinksReplaced;
        assert!(replaced.closes(id, Standing::Editor).is_some());
        assert!(replaced.closes(id, Standing::Viewer).is_some());
        assert!(replaced.closes(id, Standing::Owner).is_none());
        assert!(Moderation::Locked(true)
            .closes(id, Standing::Editor)
            .is_none());
    }

    #[test]
    fn removing_closes_that_member_only_and_deleting_closes_everyone() {
        let (id, other) = (Uuid::new_v4(), Uuid::new_v4());
        let removed = Moderation::Removed(id);
        assert!(removed.closes(id, Standing::Owner).is_some());
        assert!(removed.closes(other, Standing::Editor).is_none());
        assert!(Moderation::Deleted.closes(other, Standing::Owner).is_some());
    }
}
