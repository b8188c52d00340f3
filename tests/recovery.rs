//! Recovery never guesses: a transaction directory whose journal is lost is left alone (exit 4,
//! naming it), and `molt rollback` refuses a kept backup that is missing a file (exit 1, nothing
//! changed).

use crate::craft::reference_releases;
use crate::util::{Env, snapshot, tree_snapshot};

#[test]
fn a_txn_dir_without_its_journal_but_with_a_backup_is_left_alone_with_exit_4() {
    let env = Env::new();
    let [t1, t2, _] = reference_releases(&env);
    env.file_config();
    env.apply(&["--version", "1.0.0"]).success();
    // Kill the patch right after its first old file moved into the backup, then lose the
    // journal.
    let pristine = env.path("pristine");
    crate::crash::copy_tree(&env.install(), &pristine);
    let mut k = 1;
    let moved = loop {
        crate::crash::copy_tree(&pristine, &env.install());
        let k_str = k.to_string();
        let crashed = env.molt_with_env(
            &["apply", "--config", "molt.toml", "--version", "1.1.0"],
            &[("MOLT_TEST_CRASH_AT_STEP", &k_str)],
        );
        assert_eq!(crashed.code, 137, "{}", crashed.stderr);
        let marker = format!("at step {k} (backup ");
        if let Some(at) = crashed.stderr.find(&marker) {
            let rest = &crashed.stderr[at + marker.len()..];
            break rest[..rest.find(')').unwrap()].to_owned();
        }
        k += 1;
        assert!(k < 20, "no backup step:\n{}", crashed.stderr);
    };
    let txn_root = env.install().join(".molt/txn");
    let dirs: Vec<_> = std::fs::read_dir(&txn_root).unwrap().collect();
    assert_eq!(dirs.len(), 1);
    let dir = dirs.into_iter().next().unwrap().unwrap().path();
    assert!(
        std::fs::read_dir(dir.join("backup"))
            .unwrap()
            .next()
            .is_some()
    );
    std::fs::remove_file(dir.join("journal")).unwrap();
    let install_before = snapshot(&env.install());
    let txn_before = snapshot(&dir);

    let run = env
        .molt(&["status", "--config", "molt.toml", "--json"])
        .code(4)
        .error_contains(&[
            &dir.display().to_string(),
            "journal is missing",
            "files in backup/",
        ]);
    assert_eq!(run.result()["exit_code"], 4);
    env.apply(&["--version", "1.1.0"]).code(4);
    assert_eq!(snapshot(&env.install()), install_before);
    assert_eq!(
        snapshot(&dir),
        txn_before,
        "the transaction dir was touched"
    );

    // The operator restores from backup/ by hand, removes the directory, and molt carries on.
    assert_ne!(install_before, tree_snapshot(&t1));
    std::fs::rename(dir.join("backup").join(&moved), env.install().join(&moved)).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(snapshot(&env.install()), tree_snapshot(&t1));
    env.apply(&["--version", "1.1.0"]).success();
    assert_eq!(snapshot(&env.install()), tree_snapshot(&t2));
}

#[test]
fn rollback_from_a_backup_missing_a_file_exits_1_and_changes_nothing() {
    let env = Env::new();
    let [_, t2, _] = reference_releases(&env);
    env.file_config();
    env.apply(&["--version", "1.0.0"]).success();
    env.apply(&["--version", "1.1.0", "--force-full"]).success();
    let history = env.install().join(".molt/history");
    let newest = std::fs::read_dir(&history)
        .unwrap()
        .map(|e| e.unwrap().path())
        .max()
        .unwrap();
    let saved = newest.join("backup/bin/app");
    assert!(saved.is_file(), "the full update replaced bin/app");
    std::fs::remove_file(&saved).unwrap();
    let before = snapshot(&env.install());

    env.molt(&["rollback", "--config", "molt.toml", "--json"])
        .code(1)
        .error_contains(&["bin/app", "refusing to roll back", "nothing was changed"]);
    assert_eq!(snapshot(&env.install()), before);
    assert_eq!(before, tree_snapshot(&t2));
    assert_eq!(env.installed_version(), "1.1.0");
    env.molt(&["verify", "--config", "molt.toml"]).success();
}
