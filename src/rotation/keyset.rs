//! Where a key set stands in a rotation, and the change each phase makes
//! to it. Pure: nothing here reads, writes or waits.
//!
//! ```text
//! settled  --prepare-->  prepared  --activate-->  activated  --retire-->  settled
//! (A active)             (A active, B next)       (B active, A retiring)  (B active, A retired)
//! ```

use kisum_common::keys::{Key, KeySet, KeyState};

/// The rotation stage a key set is in. Retired keys do not count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stage {
    /// One active key, nothing under way.
    Settled { active: String },
    /// A next key is published beside the active one.
    Prepared { active: String, next: String },
    /// The new key signs; the old one is still published.
    Activated { active: String, retiring: String },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StageError {
    #[error(
        "the key set has {next} next and {retiring} retiring keys; a rotation handles one of each, never both: remove the extra ones with --emergency KID"
    )]
    Irregular { next: usize, retiring: usize },
    #[error("key {retiring} is still retiring: finish that rotation first (`--phase retire`)")]
    RetireFirst { retiring: String },
    #[error("there is no next key to activate: run `--phase prepare` first")]
    NothingPrepared,
    #[error("no key {kid} in the key set")]
    UnknownKid { kid: String },
    #[error("cannot generate a key: {0}")]
    Generate(String),
}

fn kids_in(set: &KeySet, state: KeyState) -> Vec<String> {
    set.keys
        .iter()
        .filter(|k| k.state == state)
        .map(|k| k.kid.clone())
        .collect()
}

impl Stage {
    pub fn of(set: &KeySet) -> Result<Stage, StageError> {
        let active = set.active().kid.clone();
        let next = kids_in(set, KeyState::Next);
        let retiring = kids_in(set, KeyState::Retiring);
        match (next.as_slice(), retiring.as_slice()) {
            ([], []) => Ok(Stage::Settled { active }),
            ([next], []) => Ok(Stage::Prepared {
                active,
                next: next.clone(),
            }),
            ([], [retiring]) => Ok(Stage::Activated {
                active,
                retiring: retiring.clone(),
            }),
            _ => Err(StageError::Irregular {
                next: next.len(),
                retiring: retiring.len(),
            }),
        }
    }
}

fn with_state(set: &KeySet, kid: &str, state: KeyState) -> KeySet {
    let mut set = set.clone();
    for key in set.keys.iter_mut().filter(|k| k.kid == kid) {
        key.state = state;
    }
    set
}

fn generate(state: KeyState, now: i64) -> Result<Key, StageError> {
    Key::generate(state, now).map_err(|e| StageError::Generate(e.to_string()))
}

/// A new next key beside the active one; `None` when one is prepared
/// already.
pub fn prepare(set: &KeySet, now: i64) -> Result<Option<KeySet>, StageError> {
    match Stage::of(set)? {
        Stage::Settled { .. } => {
            let mut set = set.clone();
            set.keys.push(generate(KeyState::Next, now)?);
            Ok(Some(set))
        }
        Stage::Prepared { .. } => Ok(None),
        Stage::Activated { retiring, .. } => Err(StageError::RetireFirst { retiring }),
    }
}

/// The next key signs, the active one retires; `None` when that happened
/// already.
pub fn activate(set: &KeySet) -> Result<Option<KeySet>, StageError> {
    match Stage::of(set)? {
        Stage::Settled { .. } => Err(StageError::NothingPrepared),
        Stage::Prepared { active, next } => {
            let set = with_state(set, &active, KeyState::Retiring);
            Ok(Some(with_state(&set, &next, KeyState::Active)))
        }
        Stage::Activated { .. } => Ok(None),
    }
}

/// The retiring key leaves the JWKS (kept, retired, for the record);
/// `None` when nothing is retiring.
pub fn retire(set: &KeySet) -> Result<Option<KeySet>, StageError> {
    match Stage::of(set)? {
        Stage::Activated { retiring, .. } => {
            Ok(Some(with_state(set, &retiring, KeyState::Retired)))
        }
        Stage::Settled { .. } | Stage::Prepared { .. } => Ok(None),
    }
}

/// What an emergency revocation does to the key set.
#[derive(Debug, Clone)]
pub struct Revocation {
    pub set: KeySet,
    /// The key generated to sign in place of a revoked active key.
    pub replacement: Option<String>,
}

/// Removes `kid` from the set altogether: a compromised private key is not
/// worth keeping. When it is the active key, a new key generated now
/// becomes active in the same change (a set always has one signing key);
/// a prepared next key is not promoted, since whoever took the active key
/// from the key set may well hold that one too.
pub fn revoke(set: &KeySet, kid: &str, now: i64) -> Result<Revocation, StageError> {
    let Some(key) = set.keys.iter().find(|k| k.kid == kid) else {
        return Err(StageError::UnknownKid {
            kid: kid.to_string(),
        });
    };
    let mut revoked = set.clone();
    revoked.keys.retain(|k| k.kid != kid);
    let mut replacement = None;
    if key.state == KeyState::Active {
        let new = generate(KeyState::Active, now)?;
        replacement = Some(new.kid.clone());
        revoked.keys.push(new);
    }
    Ok(Revocation {
        set: revoked,
        replacement,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settled() -> KeySet {
        KeySet::generate(1).unwrap()
    }

    fn state_of(set: &KeySet, kid: &str) -> KeyState {
        set.keys.iter().find(|k| k.kid == kid).unwrap().state
    }

    #[test]
    fn a_rotation_goes_through_prepare_activate_and_retire() {
        let set = settled();
        let old = set.active().kid.clone();
        assert_eq!(
            Stage::of(&set).unwrap(),
            Stage::Settled {
                active: old.clone()
            }
        );

        let prepared = prepare(&set, 2).unwrap().unwrap();
        prepared.check().unwrap();
        let Stage::Prepared { active, next } = Stage::of(&prepared).unwrap() else {
            panic!("not prepared");
        };
        assert_eq!(active, old);
        assert_eq!(prepared.published_kids(), [old.clone(), next.clone()]);

        let activated = activate(&prepared).unwrap().unwrap();
        activated.check().unwrap();
        assert_eq!(activated.active().kid, next);
        assert_eq!(state_of(&activated, &old), KeyState::Retiring);
        assert_eq!(activated.published_kids().len(), 2);

        let retired = retire(&activated).unwrap().unwrap();
        retired.check().unwrap();
        assert_eq!(state_of(&retired, &old), KeyState::Retired);
        assert_eq!(retired.published_kids(), [next.as_str()]);
        assert_eq!(
            Stage::of(&retired).unwrap(),
            Stage::Settled { active: next }
        );
    }

    #[test]
    fn each_phase_is_idempotent() {
        let prepared = prepare(&settled(), 2).unwrap().unwrap();
        assert!(prepare(&prepared, 3).unwrap().is_none());
        let activated = activate(&prepared).unwrap().unwrap();
        assert!(activate(&activated).unwrap().is_none());
        let retired = retire(&activated).unwrap().unwrap();
        assert!(retire(&retired).unwrap().is_none());
    }

    #[test]
    fn phases_out_of_order_are_refused() {
        assert_eq!(
            activate(&settled()).unwrap_err(),
            StageError::NothingPrepared
        );
        let activated = activate(&prepare(&settled(), 2).unwrap().unwrap())
            .unwrap()
            .unwrap();
        assert!(matches!(
            prepare(&activated, 3),
            Err(StageError::RetireFirst { .. })
        ));
        // Nothing retiring: retire has nothing to do.
        assert!(retire(&settled()).unwrap().is_none());
    }

    #[test]
    fn revoking_the_active_key_makes_a_new_one_active_at_once() {
        let prepared = prepare(&settled(), 2).unwrap().unwrap();
        let Stage::Prepared { active, next } = Stage::of(&prepared).unwrap() else {
            panic!("not prepared");
        };
        let revocation = revoke(&prepared, &active, 3).unwrap();
        revocation.set.check().unwrap();
        let replacement = revocation.replacement.unwrap();
        assert_eq!(revocation.set.active().kid, replacement);
        assert_ne!(replacement, next, "the next key is not promoted");
        assert!(revocation.set.keys.iter().all(|k| k.kid != active));
        assert_eq!(state_of(&revocation.set, &next), KeyState::Next);
    }

    #[test]
    fn revoking_another_key_only_removes_it() {
        let activated = activate(&prepare(&settled(), 2).unwrap().unwrap())
            .unwrap()
            .unwrap();
        let Stage::Activated { active, retiring } = Stage::of(&activated).unwrap() else {
            panic!("not activated");
        };
        let revocation = revoke(&activated, &retiring, 3).unwrap();
        assert!(revocation.replacement.is_none());
        assert_eq!(revocation.set.published_kids(), [active.as_str()]);
        assert_eq!(
            Stage::of(&revocation.set).unwrap(),
            Stage::Settled { active }
        );
        assert!(matches!(
            revoke(&activated, "0000000000000000", 3),
            Err(StageError::UnknownKid { .. })
        ));
    }

    #[test]
    fn two_rotations_at_once_are_irregular() {
        let activated = activate(&prepare(&settled(), 2).unwrap().unwrap())
            .unwrap()
            .unwrap();
        let mut both = activated.clone();
        both.keys.push(Key::generate(KeyState::Next, 3).unwrap());
        assert_eq!(
            Stage::of(&both).unwrap_err(),
            StageError::Irregular {
                next: 1,
                retiring: 1
            }
        );
    }
}
