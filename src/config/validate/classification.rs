//! The `classification:` section: built-in rules and the operator's files.

use super::Validator;
use crate::config::model;
use crate::dsn::RulesError;
use listwarden_core::diag::{Seg, one_line, parse_path, read_text};

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
                                Some(name) => format!("(rule {name:?}) {}", issue.message),
                                None => issue.message.clone(),
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
}
