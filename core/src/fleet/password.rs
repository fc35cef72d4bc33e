//! A broker password as Mosquitto stores it. Only the stored form lives here; hashing and
//! checking a password (PBKDF2, a random salt) are the gateway's `access` module.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use std::fmt;
use std::str::FromStr;

/// Length of a PBKDF2-SHA512 hash, bytes.
pub const HASH_LEN: usize = 64;

/// A password as Mosquitto stores it: `$7$<iterations>$<salt>$<hash>`, PBKDF2-SHA512,
/// base64.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash {
    iterations: u32,
    salt: Vec<u8>,
    hash: Vec<u8>,
}

impl PasswordHash {
    /// A hash from its parts: `hash` must be [`HASH_LEN`] bytes, `salt` non-empty,
    /// `iterations` non-zero.
    pub fn from_parts(
        iterations: u32,
        salt: Vec<u8>,
        hash: Vec<u8>,
    ) -> Result<Self, HashFormatError> {
        if iterations == 0 || salt.is_empty() || hash.len() != HASH_LEN {
            return Err(HashFormatError);
        }
        Ok(Self {
            iterations,
            salt,
            hash,
        })
    }

    /// PBKDF2 iterations.
    pub fn iterations(&self) -> u32 {
        self.iterations
    }

    /// The salt.
    pub fn salt(&self) -> &[u8] {
        &self.salt
    }

    /// The derived hash.
    pub fn hash(&self) -> &[u8] {
        &self.hash
    }

    /// The dynamic-security plugin's fields for this password: salt and hash in base64,
    /// iterations.
    pub fn dynsec_fields(&self) -> (String, String, u32) {
        (
            B64.encode(&self.salt),
            B64.encode(&self.hash),
            self.iterations,
        )
    }
}

impl fmt::Display for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (salt, hash, iterations) = self.dynsec_fields();
        write!(f, "$7${iterations}${salt}${hash}")
    }
}

/// Hashes are not secret, but long and useless in logs.
impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PasswordHash($7$…)")
    }
}

/// Why a stored hash does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a Mosquitto password hash ($7$<iterations>$<salt>$<hash>, base64)")]
pub struct HashFormatError;

impl FromStr for PasswordHash {
    type Err = HashFormatError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = s.strip_prefix("$7$").ok_or(HashFormatError)?.split('$');
        let (Some(iterations), Some(salt), Some(hash), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(HashFormatError);
        };
        let iterations = iterations.parse().map_err(|_| HashFormatError)?;
        let salt = B64.decode(salt).map_err(|_| HashFormatError)?;
        let hash = B64.decode(hash).map_err(|_| HashFormatError)?;
        Self::from_parts(iterations, salt, hash)
    }
}

impl serde::Serialize for PasswordHash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for PasswordHash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}
