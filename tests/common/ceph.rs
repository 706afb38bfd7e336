//! The real Ceph RADOS Gateway of `../shared/tools/micro-ceph.sh` on 127.0.0.1:7480.

use std::path::Path;
use std::process::Command;

pub const ENDPOINT: &str = "http://127.0.0.1:7480";
pub const ACCESS_KEY: &str = "pyrite";
pub const SECRET_KEY: &str = "pyrite-secret";

fn rgw_answers() -> bool {
    reqwest::blocking::get(ENDPOINT).is_ok()
}

/// Starts micro-ceph unless an RGW already answers, then creates a fresh bucket (object_store
/// cannot create buckets; curl signs the request with SigV4). The error says why Ceph could
/// not be had.
pub fn fresh_bucket() -> Result<String, String> {
    // Tests of one binary run in parallel; two micro-ceph.sh runs at once tear down each
    // other's daemons, so one test starts Ceph while the others wait for it.
    static CEPH_START: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _starting = CEPH_START.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if !rgw_answers() {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/tools/micro-ceph.sh");
        let status = Command::new("bash")
            .arg(&script)
            .status()
            .map_err(|err| format!("running {}: {err}", script.display()))?;
        if !status.success() {
            return Err(format!("micro-ceph.sh failed to start Ceph ({status})"));
        }
    }
    let bucket = format!("pyrite-test-{}", uuid::Uuid::new_v4().simple());
    let output = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--aws-sigv4",
            "aws:amz:us-east-1:s3",
            "--user",
        ])
        .arg(format!("{ACCESS_KEY}:{SECRET_KEY}"))
        // SHA-256 of the empty body: RGW wants the payload hash signed.
        .args([
            "-H",
            "x-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        ])
        .args(["-X", "PUT"])
        .arg(format!("{ENDPOINT}/{bucket}"))
        .output()
        .map_err(|err| format!("running curl: {err}"))?;
    let code = String::from_utf8_lossy(&output.stdout);
    if code != "200" {
        return Err(format!("creating bucket {bucket}: HTTP {code}"));
    }
    Ok(bucket)
}
