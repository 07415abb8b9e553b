//! Encryption at rest with age (X25519 recipients). The recipients (public
//! keys) come from the matrix, `backups.age-recipients`; the identity that
//! decrypts lives in the environment's secret store, secret
//! `backup-age-identity`, key `identity` (an `AGE-SECRET-KEY-1...` line).

use std::io::{self, Read, Write};
use std::str::FromStr;

use crate::secrets::{Secret, SecretStore};

/// Secret and key of the age identity in the secret store.
pub use crate::matrix::model::BACKUP_IDENTITY_SECRET as IDENTITY_SECRET;
pub const IDENTITY_KEY: &str = "identity";

/// The recipients a backup is encrypted to; none means plain files.
#[derive(Clone, Default)]
pub struct Recipients(Vec<age::x25519::Recipient>);

impl Recipients {
    /// Parses the public keys of the matrix.
    pub fn parse(keys: &[String]) -> Result<Recipients, String> {
        keys.iter()
            .map(|key| {
                age::x25519::Recipient::from_str(key.trim())
                    .map_err(|e| format!("age recipient {key:?} cannot be used: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Recipients)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The public keys, as written in manifests.
    pub fn keys(&self) -> Vec<String> {
        self.0.iter().map(ToString::to_string).collect()
    }
}

/// Wraps `output` so that what is written to it is stored encrypted.
pub fn wrap<W: Write>(
    output: W,
    recipients: &Recipients,
) -> io::Result<age::stream::StreamWriter<W>> {
    let encryptor =
        age::Encryptor::with_recipients(recipients.0.iter().map(|r| r as &dyn age::Recipient))
            .map_err(io::Error::other)?;
    encryptor.wrap_output(output)
}

/// An identity able to decrypt backups.
pub struct Identity(age::x25519::Identity);

impl Identity {
    #[cfg(test)]
    pub fn generate() -> Identity {
        Identity(age::x25519::Identity::generate())
    }

    pub fn parse(text: &Secret) -> Result<Identity, String> {
        age::x25519::Identity::from_str(text.expose().trim())
            .map(Identity)
            .map_err(|_| "the age identity is malformed".to_string())
    }

    /// Reads the identity from the secret store; `Ok(None)` when absent.
    pub fn from_store(store: &dyn SecretStore) -> Result<Option<Identity>, String> {
        match store.read(IDENTITY_SECRET, IDENTITY_KEY) {
            Ok(Some(value)) => Identity::parse(&value).map(Some),
            Ok(None) => Ok(None),
            Err(error) => Err(error.to_string()),
        }
    }

    #[cfg(test)]
    pub fn recipient(&self) -> String {
        self.0.to_public().to_string()
    }

    /// A reader of the plain content of an encrypted stream.
    pub fn decrypt<R: Read>(&self, input: R) -> io::Result<impl Read + use<R>> {
        let decryptor = age::Decryptor::new(input).map_err(io::Error::other)?;
        decryptor
            .decrypt(std::iter::once(&self.0 as &dyn age::Identity))
            .map_err(io::Error::other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_encrypted_to_a_recipient_decrypts_with_its_identity() {
        let identity = Identity::generate();
        let recipients = Recipients::parse(&[identity.recipient()]).unwrap();
        let mut stream = wrap(Vec::new(), &recipients).unwrap();
        stream.write_all(b"secret rows").unwrap();
        let sealed = stream.finish().unwrap();
        assert!(!sealed.windows(11).any(|w| w == b"secret rows"));
        let mut plain = String::new();
        identity
            .decrypt(&sealed[..])
            .unwrap()
            .read_to_string(&mut plain)
            .unwrap();
        assert_eq!(plain, "secret rows");
        let other = Identity::generate();
        assert!(other.decrypt(&sealed[..]).is_err());
    }

    #[test]
    fn a_bad_recipient_is_refused_without_echoing_secrets() {
        assert!(Recipients::parse(&["age1nope".into()]).is_err());
        assert!(Identity::parse(&Secret::new("AGE-SECRET-KEY-1XYZ")).is_err());
    }
}
