//! An opened install: its state directory, held under an exclusive lock, with any interrupted
//! transaction recovered before the caller sees it.
//!
//! Every command that touches an install starts here, so "finish recovery first" is enforced in
//! one place instead of being remembered by each subcommand.

use serde_json::{Value, json};

use crate::Error;
use crate::config::Config;
use crate::output::Output;
use crate::state::{InstallState, LockGuard, StateDir, StateError, TrustState};
use crate::txn::{self, RecoveredTxn};

pub(crate) struct Install {
    pub state_dir: StateDir,
    _lock: LockGuard,
}

impl Install {
    /// Creates the state dir if needed, takes the lock, recovers interrupted transactions and
    /// reports each one as a `recovered` event.
    pub(crate) fn open(config: &Config, out: &Output) -> Result<Install, Error> {
        let (install, recovered) = Self::open_quietly(config)?;
        for t in &recovered {
            out.event("recovered", &format!("molt: {t}"), recovered_json(t));
        }
        Ok(install)
    }

    /// Like [`Install::open`], but hands the recovered transactions to the caller.
    pub(crate) fn open_quietly(config: &Config) -> Result<(Install, Vec<RecoveredTxn>), Error> {
        let state_dir = StateDir::open(&config.state_dir, &config.install_dir)?;
        let lock = state_dir.lock()?;
        // Before recovery: an interrupted transaction of another install is not ours to undo.
        claim(&state_dir, config)?;
        let recovered = txn::recover(&state_dir)?
            .map(|r| r.transactions)
            .unwrap_or_default();
        Ok((
            Install {
                state_dir,
                _lock: lock,
            },
            recovered,
        ))
    }

    pub(crate) fn state(&self) -> Result<InstallState, Error> {
        Ok(self.state_dir.load_state()?)
    }

    pub(crate) fn trust(&self) -> Result<TrustState, Error> {
        Ok(self.state_dir.load_trust()?)
    }

    /// The device id handed to strategies: the operator's, or one molt made and keeps here.
    pub(crate) fn device_id(&self, config: &Config) -> Result<String, Error> {
        if let Some(id) = &config.device_id {
            return Ok(id.clone());
        }
        let path = self.state_dir.root().join("device-id");
        match std::fs::read_to_string(&path) {
            Ok(id) if !id.trim().is_empty() => Ok(id.trim().to_owned()),
            _ => {
                let mut bytes = [0u8; 16];
                getrandom::fill(&mut bytes).map_err(|e| Error::DeviceId {
                    path: path.clone(),
                    source: std::io::Error::other(e.to_string()),
                })?;
                let id = hex::encode(bytes);
                crate::fsutil::write_atomic(&path, format!("{id}\n").as_bytes()).map_err(
                    |source| Error::DeviceId {
                        path: path.clone(),
                        source,
                    },
                )?;
                Ok(id)
            }
        }
    }
}

/// Binds the state dir to this install: `state.json` records the canonical install path and
/// the product, and a state dir recorded for another install is refused.
fn claim(state_dir: &StateDir, config: &Config) -> Result<(), Error> {
    let mut state = state_dir.load_state()?;
    let here = std::fs::canonicalize(&config.install_dir).map_err(|source| StateError::Stat {
        path: config.install_dir.clone(),
        source,
    })?;
    match (&state.install_dir, &state.product) {
        (Some(dir), Some(product)) if *dir == here && *product == config.product => Ok(()),
        (Some(dir), product) if *dir != here || product.as_ref() != Some(&config.product) => {
            Err(StateError::ForeignStateDir {
                state_dir: state_dir.root().to_owned(),
                recorded: dir.clone(),
                product: product.clone().unwrap_or_default(),
                install_dir: here,
            }
            .into())
        }
        _ => {
            state.install_dir = Some(here);
            state.product = Some(config.product.clone());
            Ok(state_dir.save_state(&state)?)
        }
    }
}

/// One recovered transaction as JSON (`recovered` events, `molt status --json`).
pub(crate) fn recovered_json(t: &RecoveredTxn) -> Value {
    json!({
        "id": t.id,
        "from": t.from.as_ref().map(ToString::to_string),
        "to": t.to.as_ref().map(ToString::to_string),
        "action": format!("{:?}", t.action).to_lowercase(),
        "message": t.to_string(),
    })
}
