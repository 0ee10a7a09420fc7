//! The binary as a user runs it: every command and its exit code.

use crate::support::{Project, stderr, stdout};

#[test]
fn init_writes_a_project_that_checks_and_runs() {
    let p = Project::starter();
    let o = p.run(&["check"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("douyin_script"));
    let again = p.run(&["init", "."]);
    assert_eq!(again.status.code(), Some(2), "init must not overwrite: {}", stderr(&again));
}
