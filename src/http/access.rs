//! Private rooms' secrets: making a room's name and its two tokens, hashing them, and telling which
//! token (if any) a client presented.
//!
//! A private room has an edit token (draw, clear: everything) and a view token (watch only). This
//! module owns how they are made (32 bytes from the operating system's generator, base64url), how
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
}

/// What a presented token allows in a private room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Edit,
    View,
}

/// A room being created: its name, its tokens (shown once, to its creator) and their digests.
pub struct NewPrivateRoom {
    pub room: String,
    pub edit_token: String,
    pub view_token: String,
    pub hashes: AccessHashes,
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
    /// A fresh random name and two fresh random tokens.
    pub fn generate() -> Result<NewPrivateRoom, NoRandomness> {
        let room = random_text::<ROOM_NAME_BYTES>()?;
        let edit_token = random_text::<TOKEN_BYTES>()?;
        let view_token = random_text::<TOKEN_BYTES>()?;
        let hashes = AccessHashes {
            edit: hash_token(&edit_token),
            view: hash_token(&view_token),
        };
        Ok(NewPrivateRoom {
            room,
            edit_token,
            view_token,
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
    /// What `token` allows here, if anything. Both digests are always compared, each in constant
    /// time, so the time taken says nothing about how much of a digest matched or which one did.
    pub fn role_of(&self, token: &str) -> Option<Role> {
        let presented = hash_token(token);
        let edit = presented.ct_eq(&self.edit);
        let view = presented.ct_eq(&self.view);
        if bool::from(edit) {
            Some(Role::Edit)
        } else if bool::from(view) {
            Some(Role::View)
        } else {
            None
        }
    }

    /// From the store's bytes; `None` unless both are digests.
    pub fn from_slices(edit: &[u8], view: &[u8]) -> Option<AccessHashes> {
        Some(AccessHashes {
            edit: edit.try_into().ok()?,
            view: view.try_into().ok()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::is_valid_room_name;

    #[test]
    fn a_new_room_has_a_valid_name_and_two_distinct_long_tokens() {
        let created = NewPrivateRoom::generate().unwrap();
        assert!(is_valid_room_name(&created.room), "{}", created.room);
        assert_eq!(created.edit_token.len(), 43);
        assert_ne!(created.edit_token, created.view_token);
        assert_ne!(created.hashes.edit, created.hashes.view);
    }

    #[test]
    fn each_token_gives_its_role_and_nothing_else_gives_any() {
        let created = NewPrivateRoom::generate().unwrap();
        let hashes = created.hashes;
        assert_eq!(hashes.role_of(&created.edit_token), Some(Role::Edit));
        assert_eq!(hashes.role_of(&created.view_token), Some(Role::View));
        assert_eq!(hashes.role_of(""), None);
        assert_eq!(hashes.role_of(&created.edit_token[1..]), None);
        let other = NewPrivateRoom::generate().unwrap();
        assert_eq!(hashes.role_of(&other.edit_token), None);
    }

    #[test]
    fn stored_bytes_of_the_wrong_length_are_no_digests() {
        assert!(AccessHashes::from_slices(&[0; 32], &[1; 31]).is_none());
        assert!(AccessHashes::from_slices(&[0; 32], &[1; 32]).is_some());
    }
}
