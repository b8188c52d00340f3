//! Delivery: which package file brings the chosen release. A patch with a delta package is
//! delivered by it when every base it decodes against is installed as signed (molt's state
//! records it with that hash, and the file is still a regular file of that size); otherwise — a
//! base edited locally, removed, or never installed by molt — by the plain patch package, so a
//! local edit costs bytes, never the update. The bases' contents are hashed once, while they are
//! decoded against: an edit that kept the size is found there, and `update::run` then stages the
//! plain package instead ([`plain`], [`report_fallback`]). A full install or a patch without
//! deltas is its own package.

use serde_json::json;

use crate::output::Output;
use crate::package::delta::{BaseMismatch, Bases};
use crate::package::extract::ExtractError;
use crate::repo::manifest::{DeltaPackage, Package};
use crate::state::InstallState;
use crate::strategy::Choice;

/// The package to fetch, and the deltas it carries — owned, so the stage can let the delta
/// table (megabytes at 40,000 deltas) go as soon as the package is extracted.
#[derive(Debug)]
pub(crate) struct Delivery {
    pub(crate) package: Package,
    pub(crate) delta: Option<DeltaPackage>,
}

/// Chooses the package for `choice` (which names one), reporting the choice as an event. A
/// patch's delta package moves out of `choice` into the delivery.
pub(crate) fn delivery(
    choice: &mut Choice,
    install_dir: &std::path::Path,
    state: &InstallState,
    out: &Output,
) -> Option<Delivery> {
    let delta = match choice {
        Choice::Patch { delta, .. } => delta.take(),
        _ => None,
    };
    let plain = choice.package()?.clone();
    let Some(delta) = delta else {
        return Some(Delivery {
            package: plain,
            delta: None,
        });
    };
    match Bases::new(install_dir, &delta).check(&state.files) {
        Ok(()) => {
            out.event(
                "delta",
                &format!(
                    "fetching the delta package: {} files decode against the installed release \
                     ({} bytes instead of {})",
                    delta.files.len(),
                    delta.package.size,
                    plain.size
                ),
                json!({"url": delta.package.url.as_str(), "size": delta.package.size,
                       "files": delta.files.len(), "plain_size": plain.size}),
            );
            Some(Delivery {
                package: delta.package.clone(),
                delta: Some(delta),
            })
        }
        Err(mismatch) => {
            fallback_event(&mismatch, &plain, out);
            Some(Delivery {
                package: plain,
                delta: None,
            })
        }
    }
}

/// The plain package of a patch `delivery` brings by its deltas; `None` otherwise.
pub(crate) fn plain(choice: &Choice, delivery: &Delivery) -> Option<Delivery> {
    delivery.delta.as_ref()?;
    Some(Delivery {
        package: choice.package()?.clone(),
        delta: None,
    })
}

/// Reports that a base of the deltas failed while decoding (`error`, an
/// [`ExtractError::DeltaBase`]) and `plain` is fetched instead: the same event as a base found
/// modified before the fetch.
pub(crate) fn report_fallback(error: &ExtractError, plain: &Delivery, out: &Output) {
    let ExtractError::DeltaBase {
        entry,
        base,
        source,
        ..
    } = error
    else {
        return;
    };
    let mismatch = BaseMismatch {
        path: entry.clone(),
        base: base.clone(),
        reason: source.reason.clone(),
    };
    fallback_event(&mismatch, &plain.package, out);
}

fn fallback_event(mismatch: &BaseMismatch, plain: &Package, out: &Output) {
    out.event(
        "delta-fallback",
        &format!("fetching the plain patch package: {mismatch}"),
        json!({"path": mismatch.path.as_str(), "base": mismatch.base.as_str(),
               "reason": mismatch.reason, "size": plain.size}),
    );
}
