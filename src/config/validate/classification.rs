//! The `classification:` section: built-in rules and the operator's files.

use super::Validator;
use crate::config::model;
use listwarden_core::diag::{Seg, one_line, read_text};

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
                    Err(e) => self.error(&at, one_line(&e.to_string())),
                },
                Err(e) => self.error(&at, format!("{}: {e}", path.display())),
            }
        }
        set
    }
}
