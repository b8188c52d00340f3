//! An opened install: its state directory, held under an exclusive lock, with any interrupted
//! transaction recovered before the caller sees it.
//!
//! Every command that touches an install starts here, so "finish recovery first" is enforced in
//! one place instead of being remembered by each subcommand.

use serde_json::{Value, json};

use crate::Error;
use crate::config::Config;
use crate::output::Output;
use crate::state::{InstallState, LockGuard, StateDir, TrustState};
use crate::txn::{self, RecoveredTxn};

pub struct Install {
    pub state_dir: StateDir,
    _lock: LockGuard,
}

impl Install {
    /// Creates the state dir if needed, takes the lock, recovers interrupted transactions and
    /// reports each one as a `recovered` event.
    pub fn open(config: &Config, out: &Output) -> Result<Install, Error> {
        let (install, recovered) = Self::open_quietly(config)?;
        for t in &recovered {
            out.event("recovered", &format!("molt: {t}"), recovered_json(t));
        }
        Ok(install)
    }

    /// Like [`Install::open`], but hands the recovered transactions to the caller.
    pub fn open_quietly(config: &Config) -> Result<(Install, Vec<RecoveredTxn>), Error> {
        let state_dir = StateDir::open(&config.state_dir, &config.install_dir)?;
        let lock = state_dir.lock()?;
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

    pub fn state(&self) -> Result<InstallState, Error> {
        Ok(self.state_dir.load_state()?)
    }

    pub fn trust(&self) -> Result<TrustState, Error> {
        Ok(self.state_dir.load_trust()?)
    }

    /// The device id handed to strategies: the operator's, or one molt made and keeps here.
    pub fn device_id(&self, config: &Config) -> Result<String, Error> {
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
                txn::fsutil::write_atomic(&path, format!("{id}\n").as_bytes()).map_err(
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

/// One recovered transaction as JSON (`recovered` events, `molt status --json`).
pub fn recovered_json(t: &RecoveredTxn) -> Value {
    json!({
        "id": t.id,
        "from": t.from.as_ref().map(ToString::to_string),
        "to": t.to.as_ref().map(ToString::to_string),
        "action": format!("{:?}", t.action).to_lowercase(),
        "message": t.to_string(),
    })
}
