//! Every config key is documented: in the README's reference and in
//! listwarden.yaml(5). Keys are read from the serde model, so a new key
//! without documentation fails here.

use std::collections::BTreeSet;

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

/// Field names of the `Raw*` structs in src/config/model.rs.
fn config_keys() -> BTreeSet<String> {
    let model = read("src/config/model.rs");
    let mut keys = BTreeSet::new();
    let mut in_raw = false;
    for line in model.lines() {
        let t = line.trim();
        if t.starts_with("pub struct Raw") {
            in_raw = true;
        } else if t == "}" {
            in_raw = false;
        } else if in_raw
            && let Some(rest) = t.strip_prefix("pub ")
            && let Some((name, _)) = rest.split_once(':')
        {
            keys.insert(name.trim().to_string());
        }
    }
    assert!(keys.len() > 30, "the model parser found only {keys:?}");
    keys
}

#[test]
fn every_config_key_is_in_the_man_page_and_the_readme() {
    let man = read("packaging/man/listwarden.yaml.5");
    let readme = read("README.md");
    let reference = &readme
        [readme.find("## Configuration reference").unwrap()..readme.find("## Metrics").unwrap()];
    let documented = |text: &str, key: &str| {
        text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .any(|w| w == key)
    };
    let missing_man: Vec<_> = config_keys()
        .into_iter()
        .filter(|k| !documented(&man, k))
        .collect();
    assert!(
        missing_man.is_empty(),
        "not in listwarden.yaml(5): {missing_man:?}"
    );
    let missing_readme: Vec<_> = config_keys()
        .into_iter()
        .filter(|k| !documented(reference, k))
        .collect();
    assert!(
        missing_readme.is_empty(),
        "not in the README's configuration reference: {missing_readme:?}"
    );
}
