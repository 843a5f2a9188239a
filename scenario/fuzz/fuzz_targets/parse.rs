//! Any text given to the scenario loader either loads or is refused with an error that names
//! the file, a position and a message; it never panics.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use nexus_scenario::Scenario;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return; // the loader reads files as UTF-8; other bytes are refused before parsing
    };
    // The pieces that read values inside a loaded file take any text too.
    let _ = nexus_scenario::parse_duration(text);
    let _ = nexus_scenario::references(text);
    match Scenario::parse(text, Path::new("fuzz.yaml")) {
        Ok(s) => {
            assert!(!s.steps.is_empty(), "a loaded scenario has steps");
            let _ = s.time_limit();
        }
        Err(e) => {
            let shown = e.to_string();
            assert!(shown.starts_with("fuzz.yaml:"), "error does not name the file: {shown}");
            assert!(!e.message.trim().is_empty(), "error without a message: {shown}");
        }
    }
});
