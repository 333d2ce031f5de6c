//! Private rooms' secrets: making a room's name and its tokens, hashing them, and telling which
//! token (if any) a client presented; and the operator's admin token, checked the same way.
//!
//! A private room has an owner token (everything an edit token gives, plus replacing the links,
//! locking the room and removing a member), an edit token (draw, clear: everything on the canvas)
//! and a view token (watch only). This module owns how they are made (32 bytes from the operating system's generator, base64url), how
//! they are kept (only their SHA-256 digests, [`AccessHashes`], ever leave this module towards the
//! store) and how a presented token is checked (its digest compared in constant time). It must
//! never log, store or return a token it did not just create, and never compare secrets with `==`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Random bytes in a token: 256 bits, far beyond guessing (at least 128 are required).
const TOKEN_BYTES: usize = 32;
/// Random bytes in a private room's name: 128 bits, 22 base64url characters (a valid room name).
const ROOM_NAME_BYTES: usize = 16;
/// A SHA-256 digest.
pub const DIGEST_BYTES: usize = 32;

pub type Digest32 = [u8; DIGEST_BYTES];

/// What the store keeps of a private room's tokens: their digests, never the tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccessHashes {
    pub edit: Digest32,
    pub view: Digest32,
    /// `None` for a room made before rooms had owners: nobody can moderate it.
    pub owner: Option<Digest32>,
}

/// What a presented token allows in a private room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Owner,
    Edit,
    View,
}

/// A room being created: its name, its tokens (shown once, to its creator) and their digests.
pub struct NewPrivateRoom {
    pub room: String,
    pub owner_token: String,
    pub links: NewLinks,
    pub hashes: AccessHashes,
}

/// A fresh edit token and view token (a new room's, or the ones replacing a room's links).
pub struct NewLinks {
    pub edit_token: String,
    pub view_token: String,
    pub edit: Digest32,
    pub view: Digest32,
}

impl NewLinks {
    pub fn generate() -> Result<NewLinks, NoRandomness> {
        let edit_token = random_text::<TOKEN_BYTES>()?;
        let view_token = random_text::<TOKEN_BYTES>()?;
        Ok(NewLinks {
            edit: hash_token(&edit_token),
            view: hash_token(&view_token),
            edit_token,
            view_token,
        })
    }
}

/// The operator's token (`--admin-token-file`): only its digest is kept.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct AdminKey(Digest32);

impl std::fmt::Debug for AdminKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminKey(..)")
    }
}

/// An admin token shorter than this is refused at start-up: it must not be guessable.
pub const MIN_ADMIN_TOKEN_CHARS: usize = 16;

impl AdminKey {
    /// The key of the token `text` holds (a file's contents: surrounding whitespace, such as the
    /// final newline, is not part of it).
    pub fn from_file_text(text: &str) -> Result<AdminKey, String> {
        let token = text.trim();
        if token.chars().count() < MIN_ADMIN_TOKEN_CHARS {
            return Err(format!(
                "it must hold a token of at least {MIN_ADMIN_TOKEN_CHARS} characters"
            ));
        }
        Ok(AdminKey(hash_token(token)))
    }

    /// Whether `token` is the admin token (compared in constant time).
    pub fn admits(&self, token: &str) -> bool {
        bool::from(hash_token(token).ct_eq(&self.0))
    }
}

/// The operating system's generator failed (no entropy source): nothing can be created.
#[derive(Debug)]
pub struct NoRandomness(pub getrandom::Error);

impl std::fmt::Display for NoRandomness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "no random bytes from the operating system: {}", self.0)
    }
}

fn random_text<const N: usize>() -> Result<String, NoRandomness> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(NoRandomness)?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

impl NewPrivateRoom {
    /// A fresh random name and three fresh random tokens.
    pub fn generate() -> Result<NewPrivateRoom, NoRandomness> {
        let room = random_text::<ROOM_NAME_BYTES>()?;
        let owner_token = random_text::<TOKEN_BYTES>()?;
        let links = NewLinks::generate()?;
        let hashes = AccessHashes {
            edit: links.edit,
            view: links.view,
            owner: Some(hash_token(&owner_token)),
        };
        Ok(NewPrivateRoom {
            room,
            owner_token,
            links,
            hashes,
        })
    }
}

/// The digest the store keeps for `token`. A plain SHA-256 suffices: the tokens are 256 random
/// bits, so there is no dictionary to try against a leaked digest, and a slow password hash would
/// only cost every join CPU time.
pub fn hash_token(token: &str) -> Digest32 {
    Sha256::digest(token.as_bytes()).into()
}

impl AccessHashes {
    /// What `token` allows here, if anything. Every digest is always compared, each in constant
    /// time, so the time taken says nothing about how much of a digest matched or which one did.
    pub fn role_of(&self, token: &str) -> Option<Role> {
        let presented = hash_token(token);
        let edit = presented.ct_eq(&self.edit);
        let view = presented.ct_eq(&self.view);
        // A room without an owner compares against a digest no token has (all zero bytes would
        // need a SHA-256 preimage), so the time taken is the same.
        let owner = presented.ct_eq(&self.owner.unwrap_or([0; DIGEST_BYTES]));
        if bool::from(owner) && self.owner.is_some() {
            Some(Role::Owner)
        } else if bool::from(edit) {
            Some(Role::Edit)
        } else if bool::from(view) {
            Some(Role::View)
        } else {
            None
        }
    }

    /// From the store's bytes; `None` unless each is a digest (`owner` may be absent).
    pub fn from_slices(edit: &[u8], view: &[u8], owner: Option<&[u8]>) -> Option<AccessHashes> {
        Some(AccessHashes {
            edit: edit.try_into().ok()?,
            view: view.try_into().ok()?,
            owner: match owner {
                None => None,
                Some(owner) => Some(owner.try_into().ok()?),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::is_valid_room_name;

    #[test]
    fn a_new_room_has_a_valid_name_and_three_distinct_long_tokens() {
        let created = NewPrivateRoom::generate().unwrap();
        assert!(is_valid_room_name(&created.room), "{}", created.room);
        assert_eq!(created.links.edit_token.len(), 43);
        assert_eq!(created.owner_token.len(), 43);
        assert_ne!(created.links.edit_token, created.links.view_token);
        assert_ne!(created.owner_token, created.links.edit_token);
        assert_ne!(created.hashes.edit, created.hashes.view);
    }

    #[test]
    fn each_token_gives_its_role_and_nothing_else_gives_any() {
        let created = NewPrivateRoom::generate().unwrap();
        let hashes = created.hashes;
        assert_eq!(hashes.role_of(&created.owner_token), Some(Role::Owner));
        assert_eq!(hashes.role_of(&created.links.edit_token), Some(Role::Edit));
        assert_eq!(hashes.role_of(&created.links.view_token), Some(Role::View));
        assert_eq!(hashes.role_of(""), None);
        assert_eq!(hashes.role_of(&created.links.edit_token[1..]), None);
        let other = NewPrivateRoom::generate().unwrap();
        assert_eq!(hashes.role_of(&other.links.edit_token), None);
        assert_eq!(hashes.role_of(&other.owner_token), None);
    }

    #[test]
    fn a_room_without_an_owner_gives_nobody_the_owners_role() {
        let created = NewPrivateRoom::generate().unwrap();
        let hashes = AccessHashes {
            owner: None,
            ..created.hashes
        };
        assert_eq!(hashes.role_of(&created.owner_token), None);
        assert_eq!(hashes.role_of(&created.links.edit_token), Some(Role::Edit));
    }

    #[test]
    fn stored_bytes_of_the_wrong_length_are_no_digests() {
        assert!(AccessHashes::from_slices(&[0; 32], &[1; 31], None).is_none());
        assert!(AccessHashes::from_slices(&[0; 32], &[1; 32], Some(&[2; 3])).is_none());
        assert!(AccessHashes::from_slices(&[0; 32], &[1; 32], None).is_some());
    }

    #[test]
    fn the_admin_key_admits_its_token_only_and_refuses_a_short_one() {
        let key = AdminKey::from_file_text("  a-long-operator-secret\n").unwrap();
        assert!(key.admits("a-long-operator-secret"));
        assert!(!key.admits("a-long-operator-secreT"));
        assert!(AdminKey::from_file_text("short\n").is_err());
        assert_eq!(format!("{key:?}"), "AdminKey(..)");
    }
}
