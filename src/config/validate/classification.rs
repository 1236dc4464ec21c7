//! The `classification:` section: built-in rules and the operator's files.

use super::Validator;
use crate::config::{Incident, defaults, model};
use crate::dsn::RulesError;
use listwarden_core::diag::{Seg, one_line, parse_path, read_text};

/// Most recipients one storm needs; each tracked pair holds that many
/// hashes and scans them once per failure.
const MAX_INCIDENT_TRIGGER: u32 = 10_000;
/// Most (provider, rule) pairs the storm detector may be told to track.
const MAX_INCIDENT_KEYS: usize = 100_000;
/// Most recipient hashes held in all (`trigger` × `max_keys`): 16 MB.
const MAX_INCIDENT_ENTRIES: usize = 1_000_000;

impl Validator<'_> {
    pub(super) fn rules(&mut self, raw: &model::RawClassification) -> crate::dsn::RuleSet {
        use crate::dsn::RuleSet;
        let mut set = if raw.builtin.unwrap_or(true) {
            match RuleSet::builtin() {
                Ok(r) => r,
                Err(e) => {
                    // The built-in rules are tested; this is a build defect.
                    self.error(&[Seg::Key("classification")], one_line(&e.to_string()));
                    RuleSet::empty("builtin")
                }
            }
        } else {
            RuleSet::empty("none")
        };
        for (i, file) in raw.rules.iter().enumerate() {
            let path = self.check.file(file);
            let at = [Seg::Key("classification"), Seg::Key("rules"), Seg::Index(i)];
            let text = read_text(&path);
            match text {
                Ok(text) => match RuleSet::from_yaml_str(&text, &path.display().to_string()) {
                    Ok(extra) => set = RuleSet::merge(set, extra),
                    // Each problem at its own line and column in the rules file.
                    Err(RulesError::Invalid { issues, .. }) => {
                        for issue in issues {
                            let named = match &issue.name {
                                Some(name) => format!("(rule {name:?}) {}", issue.problem),
                                None => issue.problem.to_string(),
                            };
                            self.check
                                .error_in(&path, &text, &parse_path(&issue.key), named);
                        }
                    }
                    Err(RulesError::Yaml {
                        line,
                        column,
                        message,
                        ..
                    }) => self.check.error_at(&path, (line, column), message),
                    Err(e) => self.error(&at, one_line(&e.to_string())),
                },
                Err(e) => self.error(&at, format!("{}: {e}", path.display())),
            }
        }
        set
    }

    pub(super) fn incident(&mut self, raw: &model::RawIncident) -> Option<Incident> {
        if raw.enabled == Some(false) {
            return None;
        }
        let at = |k| {
            [
                Seg::Key("classification"),
                Seg::Key("incident"),
                Seg::Key(k),
            ]
        };
        let within = self.duration_or(
            raw.within.as_deref(),
            defaults::INCIDENT_WITHIN_SECS,
            &at("within"),
        );
        let hold = self.duration_or(
            raw.hold.as_deref(),
            defaults::INCIDENT_HOLD_SECS,
            &at("hold"),
        );
        let trigger = match raw.trigger {
            Some(n) if (2..=MAX_INCIDENT_TRIGGER).contains(&n) => n,
            Some(_) => {
                self.error(
                    &at("trigger"),
                    format!("must be from 2 to {MAX_INCIDENT_TRIGGER}"),
                );
                defaults::INCIDENT_TRIGGER
            }
            None => defaults::INCIDENT_TRIGGER,
        };
        let max_keys = match raw.max_keys {
            Some(n) if (1..=MAX_INCIDENT_KEYS).contains(&n) => n,
            Some(_) => {
                self.error(
                    &at("max_keys"),
                    format!("must be from 1 to {MAX_INCIDENT_KEYS}"),
                );
                defaults::INCIDENT_MAX_KEYS
            }
            None => defaults::INCIDENT_MAX_KEYS,
        };
        if (trigger as usize).saturating_mul(max_keys) > MAX_INCIDENT_ENTRIES {
            self.error(
                &at("max_keys"),
                format!(
                    "trigger {trigger} x max_keys {max_keys} is over {MAX_INCIDENT_ENTRIES} recipient hashes; lower one of them"
                ),
            );
        }
        Some(Incident {
            trigger,
            within,
            hold,
            max_keys,
        })
    }
}
