//! What `molt check` and `molt apply` report: one typed value, filled in stage by stage, that
//! both the human summary and the `--json` final object are rendered from. Its JSON field names
//! are a contract (README, "JSON output"): fields are only ever added.

use serde::Serialize;

use crate::relpath::RelPath;
use crate::repo::manifest::Operations;
use crate::strategy::Choice;
use crate::txn::{ApplyOutcome, Plan};
use crate::version::Version;

/// How far to go once the plan is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// `molt check`: verify and plan, change nothing (not even the persisted serial).
    Check,
    /// `molt apply --dry-run`: the same, reported as an apply.
    DryRun,
    /// `molt apply`.
    Apply,
}

/// The resolved choice: the `decision` event, and the head of the result.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ChoiceReport {
    /// `"full"`, `"patch"` or `"none"`.
    pub kind: &'static str,
    pub from: Option<String>,
    pub to: Option<String>,
    /// Bytes to fetch.
    pub bytes: u64,
    /// The verified manifest's serial.
    pub serial: u64,
}

/// What `check` and `apply --dry-run` would fetch (`"plan"`).
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub(crate) enum PlanReport {
    Nothing {
        reason: String,
    },
    Package {
        url: String,
        size: u64,
        unpacked_size: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        operations: Option<Operations>,
    },
}

/// The result of `molt check` and `molt apply` (the final JSON object, less `"result"`).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct UpdateReport {
    #[serde(skip)]
    pub mode: Mode,
    #[serde(flatten)]
    pub choice: ChoiceReport,
    /// Why nothing is installed (`apply`; `check` says it in `plan`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<PlanReport>,
    /// Topmost entries molt does not own that stay inside what changes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kept_unowned: Option<Vec<RelPath>>,
    /// Preserved paths skipped, then housekeeping that failed after the commit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warnings: Option<Vec<String>>,
    /// Entries `--adopt` took over.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub adopted: Option<Vec<RelPath>>,
    /// Paths the committed transaction changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changes: Option<usize>,
    /// The kept backup holding what `--adopt` took over.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub adopted_backup: Option<String>,
    /// How many files the fetched package delivered as binary deltas (a patch's delta package).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delta_files: Option<usize>,
}

impl UpdateReport {
    /// The report once the strategy's answer is resolved.
    pub(crate) fn new(mode: Mode, choice: &Choice, from: Option<&Version>, serial: u64) -> Self {
        let dry = mode != Mode::Apply;
        let reason = match choice {
            Choice::None { reason } => Some(reason.clone()),
            _ => None,
        };
        UpdateReport {
            mode,
            choice: ChoiceReport {
                kind: choice.kind(),
                from: from.map(ToString::to_string),
                to: choice.to().map(ToString::to_string),
                bytes: choice.package().map_or(0, |p| p.size),
                serial,
            },
            reason: reason.filter(|_| !dry),
            dry_run: dry.then_some(true),
            plan: dry.then(|| plan_report(choice)),
            kept_unowned: None,
            warnings: None,
            adopted: None,
            changes: None,
            adopted_backup: None,
            delta_files: None,
        }
    }

    /// The package file chosen to deliver the release: `bytes` is what is fetched.
    pub(crate) fn delivered(&mut self, delivery: &super::delivery::Delivery) {
        self.choice.bytes = delivery.package.size;
        self.delta_files = delivery.delta.as_ref().map(|d| d.files.len());
        if let Some(PlanReport::Package { url, size, .. }) = &mut self.plan {
            *url = delivery.package.url.to_string();
            *size = delivery.package.size;
        }
    }

    /// The `decision` event's line.
    pub(crate) fn describe(&self, choice: &Choice) -> String {
        let from = self.choice.from.as_deref().unwrap_or("nothing");
        match choice {
            Choice::None { reason } => format!("no update: {reason}"),
            Choice::Full { to, package, .. } => {
                format!(
                    "full install {from} → {to} ({} bytes to fetch)",
                    package.size
                )
            }
            Choice::Patch { to, package, .. } => {
                format!("patch {from} → {to} ({} bytes to fetch)", package.size)
            }
        }
    }

    /// Records what the plan keeps, skips and adopts.
    pub(crate) fn planned(&mut self, plan: &Plan, skipped: Vec<String>) {
        self.kept_unowned = Some(plan.kept_unowned.clone());
        self.warnings = Some(skipped);
        self.adopted = Some(plan.adopted.clone());
    }

    /// Records the committed transaction, and the warnings of what failed after its commit.
    pub(crate) fn committed(&mut self, outcome: &ApplyOutcome, warnings: Vec<String>) {
        self.changes = Some(outcome.changes);
        if self.adopted.as_ref().is_some_and(|a| !a.is_empty())
            && let Some(kept) = &outcome.kept_in
        {
            self.adopted_backup = Some(kept.display().to_string());
        }
        if !warnings.is_empty() {
            self.warnings.get_or_insert_default().extend(warnings);
        }
    }

    /// A patch's operations, for `check`'s human output.
    pub(crate) fn operations(&self) -> Option<&Operations> {
        match &self.plan {
            Some(PlanReport::Package { operations, .. }) => operations.as_ref(),
            _ => None,
        }
    }

    /// The human line for the result.
    pub(crate) fn summary(&self) -> String {
        let c = &self.choice;
        let from = c.from.as_deref().unwrap_or("nothing");
        let to = c.to.as_deref().unwrap_or("nothing");
        match (c.kind, self.mode) {
            ("none", _) => format!(
                "up to date ({from}){}",
                self.reason
                    .as_deref()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            ),
            (kind, Mode::Apply) => format!("updated {from} → {to} ({kind})"),
            (kind, _) => format!(
                "would apply {kind} {from} → {to} ({} bytes to fetch); nothing was changed",
                c.bytes
            ),
        }
    }
}

fn plan_report(choice: &Choice) -> PlanReport {
    match choice {
        Choice::None { reason } => PlanReport::Nothing {
            reason: reason.clone(),
        },
        Choice::Full { package, .. } | Choice::Patch { package, .. } => PlanReport::Package {
            url: package.url.to_string(),
            size: package.size,
            unpacked_size: package.unpacked_size,
            operations: match choice {
                Choice::Patch { operations, .. } => Some(operations.clone()),
                _ => None,
            },
        },
    }
}
