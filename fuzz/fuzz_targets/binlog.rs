//! The binary log decoder on arbitrary bytes: it must never panic, its JSON output must
//! be valid JSON lines, and the damage it reports must lie inside the input.
//! Inputs without the magic are also decoded behind a valid session header, so the
//! fuzzer spends its time in the record parser.
#![no_main]

use libfuzzer_sys::fuzz_target;
use log::LevelFilter;

fn header() -> Vec<u8> {
    let mut h = b"CRYOLOG1".to_vec();
    h.extend_from_slice(&1u16.to_le_bytes()); // version
    h.extend_from_slice(&32u16.to_le_bytes()); // header length
    h.extend_from_slice(&[0; 20]);
    h
}

fn check(bytes: &[u8]) {
    let mut out = Vec::new();
    let rep = cryo::binlog::decode(bytes, LevelFilter::Trace, &mut out, false);
    for d in &rep.damage {
        assert!(d.offset < bytes.len());
        let _ = d.to_string();
    }
    assert!(std::str::from_utf8(&out).is_ok());

    let mut out = Vec::new();
    let rep = cryo::binlog::decode(bytes, LevelFilter::Trace, &mut out, true);
    let text = std::str::from_utf8(&out).unwrap();
    assert_eq!(text.lines().count() as u64, rep.written);
    for line in text.lines() {
        serde_json::from_str::<serde_json::Value>(line).unwrap();
    }
}

fuzz_target!(|data: &[u8]| {
    check(data);
    if !cryo::binlog::is_binlog(data) {
        let mut b = header();
        b.extend_from_slice(data);
        check(&b);
    }
});
