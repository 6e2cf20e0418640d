//! Arbitrary bytes through every request validator and the page-token codec: no panic, every violation names a
//! field, tokens round-trip (see `tablecrypt_api::fuzzing`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tablecrypt_api::fuzzing::validate_everything(data);
});
