//! Bounce scores per list member, in `STATE_DIR/LIST/bounces.json`.
//!
//! A hard bounce adds 1, a soft bounce 0.5, at most once per member per day:
//! the day's increment is the largest class seen that day, so a bounce storm
//! (or one provider's 28,000 error messages) counts as one bad day, never as
//! thousands of bounces. Deferrals, complaint deferrals (Yahoo's TS01),
//! failures that are not the member's (`fault` other than `them`, storms)
//! and anything else add nothing (the `bounce` module decides), so good
//! members are not unsubscribed for our own reputation problems. A score left alone for `stale_after_days`
//! starts again from zero. At the threshold the member is disabled: kept in
//! the members file, skipped by posts, until an operator resets it.
//!
//! The file is small JSON (one entry per member that ever bounced; entries
//! are only created for current members), read whole and written atomically
//! under a lock.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::fsutil::{self, FsError};

/// Largest state file read.
pub const MAX_STATE_BYTES: usize = 64 * 1024 * 1024;
/// Format version written; other versions are refused, not guessed at.
const VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error("{path}: not a listwarden bounce state file: {message}")]
    Corrupt { path: PathBuf, message: String },
    #[error("cannot encode bounce state: {0}")]
    Encode(serde_json::Error),
}

/// Points per class and when to act.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scoring {
    pub hard: f64,
    pub soft: f64,
    /// Disable a member at this score.
    pub threshold: f64,
    /// Days without a counted bounce after which the score starts over.
    pub stale_after_days: u64,
}

impl Default for Scoring {
    fn default() -> Scoring {
        Scoring {
            hard: 1.0,
            soft: 0.5,
            threshold: 5.0,
            stale_after_days: 30,
        }
    }
}

/// A bounce worth counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Hard,
    Soft,
}

impl Severity {
    fn points(self, scoring: &Scoring) -> f64 {
        match self {
            Severity::Hard => scoring.hard,
            Severity::Soft => scoring.soft,
        }
    }
}

/// One member's record.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberRecord {
    pub score: f64,
    /// Day (since the epoch) of the last counted bounce.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_day: Option<u64>,
    /// Points already added on `last_day`.
    #[serde(default)]
    pub day_points: f64,
    /// Day the member was disabled; `None` while active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled_day: Option<u64>,
    /// Complaints (ARF) received with `on_complaint: flag`.
    #[serde(default)]
    pub complaints: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_complaint_day: Option<u64>,
}

/// What a counted bounce did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ScoreChange {
    Counted {
        score: f64,
    },
    /// Today's increment already covered this class.
    AlreadyCountedToday {
        score: f64,
    },
    /// This bounce reached the threshold.
    Disabled {
        score: f64,
    },
    /// The member was disabled before; nothing changes.
    AlreadyDisabled,
}

/// The state of one list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BounceState {
    version: u32,
    /// [`crate::address::Address::key`] → record.
    members: BTreeMap<String, MemberRecord>,
    /// Address key → subscription number, raised each time a member leaves
    /// (or is added by `members --add`). Unsubscribe tokens sign it, so a
    /// token dies with its subscription. Absent: 0. Kept after a member
    /// leaves, or a return would revive old tokens.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    subscriptions: BTreeMap<String, u32>,
}

impl Default for BounceState {
    fn default() -> BounceState {
        BounceState {
            version: VERSION,
            members: BTreeMap::new(),
            subscriptions: BTreeMap::new(),
        }
    }
}

impl BounceState {
    /// Counts a bounce for `member` (an address key) on day `today`.
    pub fn record(
        &mut self,
        member: &str,
        severity: Severity,
        today: u64,
        scoring: &Scoring,
    ) -> ScoreChange {
        let record = self.members.entry(member.to_owned()).or_default();
        if record.disabled_day.is_some() {
            return ScoreChange::AlreadyDisabled;
        }
        match record.last_day {
            Some(day) if day == today => {}
            Some(day) if today.saturating_sub(day) > scoring.stale_after_days => {
                record.score = 0.0;
                record.day_points = 0.0;
            }
            _ => record.day_points = 0.0,
        }
        let points = severity.points(scoring);
        let increment = points - record.day_points;
        if increment <= 0.0 {
            return ScoreChange::AlreadyCountedToday {
                score: record.score,
            };
        }
        record.score += increment;
        record.day_points = points;
        record.last_day = Some(today);
        // A hair of tolerance: configured points such as 0.3 do not add up
        // exactly in binary.
        if record.score + 1e-9 >= scoring.threshold {
            record.disabled_day = Some(today);
            ScoreChange::Disabled {
                score: record.score,
            }
        } else {
            ScoreChange::Counted {
                score: record.score,
            }
        }
    }

    /// Notes a complaint (`on_complaint: flag`).
    pub fn flag_complaint(&mut self, member: &str, today: u64) -> u32 {
        let record = self.members.entry(member.to_owned()).or_default();
        record.complaints = record.complaints.saturating_add(1);
        record.last_complaint_day = Some(today);
        record.complaints
    }

    pub fn is_disabled(&self, member: &str) -> bool {
        self.members
            .get(member)
            .is_some_and(|r| r.disabled_day.is_some())
    }

    /// Keys of all disabled members.
    pub fn disabled(&self) -> BTreeSet<String> {
        self.members
            .iter()
            .filter(|(_, r)| r.disabled_day.is_some())
            .map(|(k, _)| k.clone())
            .collect()
    }

    pub fn get(&self, member: &str) -> Option<&MemberRecord> {
        self.members.get(member)
    }

    /// All records, by member key.
    pub fn records(&self) -> impl Iterator<Item = (&String, &MemberRecord)> {
        self.members.iter()
    }

    /// Clears one member's record (score, disabled, complaints), or every
    /// record with `None`. Returns how many were cleared.
    pub fn reset(&mut self, member: Option<&str>) -> usize {
        match member {
            Some(key) => usize::from(self.members.remove(key).is_some()),
            None => {
                let n = self.members.len();
                self.members.clear();
                n
            }
        }
    }

    /// Forgets a member who left the list, and ends the subscription (its
    /// unsubscribe tokens stop working).
    pub fn forget(&mut self, member: &str) {
        self.members.remove(member);
        self.next_subscription(member);
    }

    /// The member's current subscription number (0 if never raised).
    pub fn subscription(&self, member: &str) -> u32 {
        self.subscriptions.get(member).copied().unwrap_or(0)
    }

    /// Starts a new subscription for `member`; returns its number.
    pub fn next_subscription(&mut self, member: &str) -> u32 {
        let n = self.subscriptions.entry(member.to_owned()).or_insert(0);
        // 0 is the number of members who never had one; never come back to it.
        *n = n.wrapping_add(1).max(1);
        *n
    }

    /// Subscription numbers of all members that have one.
    pub fn subscriptions(&self) -> &BTreeMap<String, u32> {
        &self.subscriptions
    }
}

/// Reads a state file; a missing file is an empty state.
pub fn load(path: &Path) -> Result<BounceState, StateError> {
    let Some(bytes) = fsutil::read_bounded(path, MAX_STATE_BYTES)? else {
        return Ok(BounceState::default());
    };
    let state: BounceState = serde_json::from_slice(&bytes).map_err(|e| StateError::Corrupt {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    if state.version != VERSION {
        return Err(StateError::Corrupt {
            path: path.to_path_buf(),
            message: format!("version {} (expected {VERSION})", state.version),
        });
    }
    Ok(state)
}

/// Locks, loads, applies `edit`, and writes back atomically if it changed.
pub fn update<R>(
    path: &Path,
    lock_timeout: Duration,
    edit: impl FnOnce(&mut BounceState) -> R,
) -> Result<R, StateError> {
    if let Some(dir) = path.parent() {
        super::ensure_dir(dir)?;
    }
    let _lock = fsutil::lock_exclusive(&fsutil::lock_path_for(path)?, lock_timeout)?;
    let mut state = load(path)?;
    let before = state.clone();
    let result = edit(&mut state);
    if state != before {
        let mut text = serde_json::to_vec_pretty(&state).map_err(StateError::Encode)?;
        text.push(b'\n');
        fsutil::write_atomic(path, &text)?;
    }
    Ok(result)
}

/// `listwarden expand --scores`: one line per record, highest score first:
/// `MEMBER SCORE active|disabled(DAY) [complaints=N] [last=DAY]`.
pub fn scores_report(state: &BounceState) -> String {
    let mut rows: Vec<(&String, &MemberRecord)> = state.records().collect();
    rows.sort_by(|a, b| b.1.score.total_cmp(&a.1.score).then_with(|| a.0.cmp(b.0)));
    let mut out = String::new();
    for (member, r) in rows {
        let status = match r.disabled_day {
            Some(day) => format!("disabled({day})"),
            None => "active".into(),
        };
        out.push_str(&format!("{member} {:.1} {status}", r.score));
        if r.complaints > 0 {
            out.push_str(&format!(" complaints={}", r.complaints));
        }
        if let Some(day) = r.last_day {
            out.push_str(&format!(" last={day}"));
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 20_000;

    #[test]
    fn scoring_table() {
        use ScoreChange::*;
        use Severity::*;
        let s = Scoring::default();
        // (day offset, severity, expected change) applied in order to one member.
        let steps = [
            (0, Soft, Counted { score: 0.5 }),
            (0, Soft, AlreadyCountedToday { score: 0.5 }),
            // A hard bounce the same day tops the day up to 1, no more.
            (0, Hard, Counted { score: 1.0 }),
            (0, Hard, AlreadyCountedToday { score: 1.0 }),
            (0, Soft, AlreadyCountedToday { score: 1.0 }),
            (1, Hard, Counted { score: 2.0 }),
            (2, Soft, Counted { score: 2.5 }),
            (3, Hard, Counted { score: 3.5 }),
            (4, Hard, Counted { score: 4.5 }),
            (4, Hard, AlreadyCountedToday { score: 4.5 }),
            (5, Soft, Disabled { score: 5.0 }),
            (6, Hard, AlreadyDisabled),
        ];
        let mut state = BounceState::default();
        for (i, (offset, severity, want)) in steps.into_iter().enumerate() {
            assert_eq!(
                state.record("m@x.org", severity, DAY + offset, &s),
                want,
                "step {i}"
            );
        }
        assert!(state.is_disabled("m@x.org"));
        assert_eq!(
            state.disabled().into_iter().collect::<Vec<_>>(),
            ["m@x.org"]
        );
    }

    #[test]
    fn a_flood_in_one_day_counts_once() {
        let s = Scoring::default();
        let mut state = BounceState::default();
        for _ in 0..28_000 {
            state.record("m@x.org", Severity::Hard, DAY, &s);
        }
        assert_eq!(state.get("m@x.org").map(|r| r.score), Some(1.0));
        assert!(!state.is_disabled("m@x.org"));
    }

    #[test]
    fn stale_scores_start_over_and_thresholds_are_settings() {
        let s = Scoring {
            threshold: 2.0,
            stale_after_days: 10,
            ..Scoring::default()
        };
        let mut state = BounceState::default();
        state.record("m@x.org", Severity::Hard, DAY, &s);
        let change = state.record("m@x.org", Severity::Hard, DAY + 11, &s);
        assert_eq!(change, ScoreChange::Counted { score: 1.0 });
        let change = state.record("m@x.org", Severity::Hard, DAY + 21, &s);
        assert_eq!(change, ScoreChange::Disabled { score: 2.0 });
    }

    #[test]
    fn reset_and_forget() {
        let s = Scoring::default();
        let mut state = BounceState::default();
        state.record("a@x.org", Severity::Hard, DAY, &s);
        state.record("b@x.org", Severity::Soft, DAY, &s);
        state.flag_complaint("c@x.org", DAY);
        assert_eq!(state.reset(Some("a@x.org")), 1);
        assert_eq!(state.reset(Some("a@x.org")), 0);
        state.forget("b@x.org");
        assert_eq!(state.records().count(), 1);
        assert_eq!(state.reset(None), 1);
    }

    #[test]
    fn file_round_trip_and_corruption() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("members").join("bounces.json");
        let s = Scoring::default();
        assert_eq!(
            load(&path).expect("missing is empty"),
            BounceState::default()
        );
        let change = update(&path, Duration::from_millis(100), |st| {
            st.record("m@x.org", Severity::Hard, DAY, &s)
        })
        .expect("update");
        assert_eq!(change, ScoreChange::Counted { score: 1.0 });
        let loaded = load(&path).expect("load");
        assert_eq!(loaded.get("m@x.org").map(|r| r.score), Some(1.0));
        let report = scores_report(&loaded);
        assert_eq!(report, format!("m@x.org 1.0 active last={DAY}\n"));

        std::fs::write(&path, b"{\"version\":1,\"members\":{},\"extra\":1}").expect("write");
        assert!(matches!(load(&path), Err(StateError::Corrupt { .. })));
        std::fs::write(&path, b"{\"version\":2,\"members\":{}}").expect("write");
        assert!(matches!(load(&path), Err(StateError::Corrupt { .. })));
        // A corrupt file is never overwritten by an update.
        assert!(update(&path, Duration::from_millis(100), |st| st.reset(None)).is_err());
        assert!(
            std::fs::read(&path)
                .expect("read")
                .starts_with(b"{\"version\":2")
        );
    }
}
