//! Hostile registry and configuration files (what an operator's editor or a broken disk
//! leaves): parsing never panics, and an error never quotes a secret. Every run of 16
//! or more characters that could be a key or a password (letters and digits) in the
//! input must be absent from the error message, which says line, column and field only.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let secrets: Vec<&str> = text
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| w.len() >= 16)
        .collect();
    let errors = [
        <gateway::fleet::registry::Registry as gateway::fleet::registry::RegistryFile>::parse(
            text,
            "devices.toml",
        )
        .err()
        .map(|e| e.to_string()),
        gateway::config::Config::parse(text)
            .err()
            .map(|e| e.to_string()),
    ];
    for message in errors.into_iter().flatten() {
        for s in &secrets {
            assert!(!message.contains(s), "an error quotes {s:?}: {message}");
        }
    }
});
