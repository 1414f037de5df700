//! `edgellm serve` driven by the official `openai` Python client (tests/clients/openai_client.py).
//!
//! Skipped with a message when Python or the `openai` package is missing, unless
//! `EDGELLM_REQUIRE_OPENAI=1` (as `.ci/run` sets after installing it), which makes that a
//! failure.

mod common;

use std::process::Command;

use common::{embed_cli, minilm, root, smollm2, Server};
use serde_json::json;

fn have_openai() -> bool {
    Command::new("python3").args(["-c", "import openai"]).status().is_ok_and(|s| s.success())
}

#[test]
fn the_openai_python_client_works_against_the_server() {
    if !have_openai() {
        assert!(
            std::env::var("EDGELLM_REQUIRE_OPENAI").as_deref() != Ok("1"),
            "python3 with the openai package is required (pip install openai)"
        );
        eprintln!("skipped: python3 with the openai package is missing (pip install openai)");
        return;
    }
    // The embeddings `edgellm embed` gives, for the client to compare with.
    let texts = ["Turn on the kitchen lights.", "Is the front door locked?", "Play some jazz."];
    let embeddings = embed_cli(&texts);
    let expected = std::env::temp_dir().join(format!("edgellm-openai-expected-{}.json", std::process::id()));
    std::fs::write(&expected, json!({"texts": texts, "embeddings": embeddings}).to_string()).unwrap();

    let server = Server::start(&[
        "-m",
        smollm2().to_str().unwrap(),
        "--embed-model",
        minilm().to_str().unwrap(),
        "--api-key",
        "test-key",
        "--parallel",
        "2",
    ]);
    let out = Command::new("python3")
        .arg(root().join("tests/clients/openai_client.py"))
        .arg(format!("http://{}/v1", server.addr))
        .arg("test-key")
        .arg(&expected)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&expected);
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}");
    assert!(
        out.status.success(),
        "openai client failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("all ok"));
}
