//! Reload: a valid change applies to the next message, an invalid file
//! keeps the running config, restart-only keys are kept.

use listwarden_test_support as support;

use indymilter_test::{Status, TestConnection};
use listwarden::daemon::Reloader;
use support::Milter;

const V1: &str =
    "milter:\n  listen: inet:127.0.0.1:8890\nlists:\n  - address: members@lists.example.org\n";
const V2: &str = "milter:\n  listen: inet:127.0.0.1:8890\nlists:\n  - address: members@lists.example.org\n  - address: news@lists.example.org\n";

async fn is_rejected(m: &Milter, sender: &str) -> bool {
    let mut conn = TestConnection::open(m.addr()).await.unwrap();
    conn.connect("c.example", ([203, 0, 113, 7], 4000))
        .await
        .unwrap();
    let status = conn.mail([sender]).await.unwrap();
    conn.close().await.unwrap();
    matches!(status, Status::Reject { .. })
}

#[tokio::test]
async fn valid_change_applies_invalid_change_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("listwarden.yaml");
    std::fs::write(&path, V1).unwrap();
    let m = Milter::start_tcp(V1).await;
    let reloader = Reloader {
        path: path.clone(),
        shared: m.shared.clone(),
    };
    let reloads = |result: &str| {
        m.shared
            .metrics
            .config_reloads
            .with_label_values(&[result])
            .get()
    };

    assert!(!is_rejected(&m, "<news@lists.example.org>").await);

    std::fs::write(&path, V2).unwrap();
    reloader.reload_now().expect("valid config reloads");
    assert!(
        is_rejected(&m, "<news@lists.example.org>").await,
        "new list protected after reload"
    );
    assert_eq!(reloads("success"), 1);

    std::fs::write(
        &path,
        "milter:\n  listen: inet:127.0.0.1:8890\nlists:\n  - address: broken\n",
    )
    .unwrap();
    let err = reloader
        .reload_now()
        .expect_err("invalid config is refused");
    assert!(
        err.to_string()
            .contains("listwarden.yaml:4:14: lists[0].address"),
        "{err}"
    );
    assert_eq!(reloads("failure"), 1);
    // The old config still runs.
    assert!(is_rejected(&m, "<news@lists.example.org>").await);
    assert!(is_rejected(&m, "<members@lists.example.org>").await);
    m.stop().await;
}

#[tokio::test]
async fn restart_only_settings_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("listwarden.yaml");
    let m = Milter::start_tcp(V1).await;
    std::fs::write(&path, V2.replace("8890", "9999")).unwrap();
    Reloader {
        path,
        shared: m.shared.clone(),
    }
    .reload_now()
    .unwrap();
    let now = m.shared.config.load();
    assert_eq!(
        now.milter.listen.to_string(),
        "inet:127.0.0.1:8890",
        "socket kept"
    );
    assert_eq!(now.lists.len(), 2, "the rest applied");
    m.stop().await;
}
