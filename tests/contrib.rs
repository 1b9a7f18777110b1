//! The systemd unit of `contrib/` passes `systemd-analyze verify` and keeps the settings the
//! server relies on.

use std::io;
use std::process::Command;

const UNIT: &str = include_str!("../contrib/messageu-server.service");
const INSTALLED_BINARY: &str = "/usr/local/bin/messageu-server";

#[test]
fn the_systemd_unit_verifies() {
    for setting in [
        "DynamicUser=yes",
        "StateDirectory=messageu",
        "WorkingDirectory=%S/messageu",
        "StandardInput=null",
        "Restart=on-failure",
        "KillSignal=SIGTERM",
    ] {
        assert!(UNIT.lines().any(|line| line == setting), "no {setting}");
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("messageu-server.service");
    // verify checks that ExecStart names an executable: the one just built.
    assert!(UNIT.contains(&format!("ExecStart={INSTALLED_BINARY}\n")));
    let unit = UNIT.replace(INSTALLED_BINARY, env!("CARGO_BIN_EXE_messageu-server"));
    std::fs::write(&path, unit).unwrap();
    let output = match Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
    {
        Ok(output) => output,
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            println!("note: skipped, systemd-analyze is not installed");
            return;
        }
        Err(error) => panic!("cannot run systemd-analyze: {error}"),
    };
    // Unknown keys and bad values are only warnings: any line about the unit fails the test.
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{report}");
    assert!(!report.contains("messageu-server.service"), "{report}");
}
