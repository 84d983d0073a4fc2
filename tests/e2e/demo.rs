//! `arbiter demo`: the zero-setup walk-through runs to the end.

use crate::harness::arbiter;

#[tokio::test]
async fn the_demo_runs_end_to_end_and_verifies_its_audit_log() {
    let out = arbiter(&["demo"]).await;
    assert_eq!(out.code(), Some(0), "{out}");
    for needle in [
        "ALLOW",
        "DENY",
        "trust.insufficient",
        "budget.exceeded",
        "scope.action_denied",
        "approval.mismatch",
        "approval.consumed",
        "verified",
    ] {
        assert!(
            out.stdout.contains(needle),
            "the demo shows {needle}:\n{out}"
        );
    }
    assert!(!out.stdout.contains("VERIFICATION FAILED"), "{out}");
}
