//! The capture engine's ending rules over arbitrary event sequences.
//!
//! Byte 0 picks how the model child behaves (ignores SIGTERM, leaves a
//! background process holding the pipes, has a timeout); every further byte
//! is one thing the world does next. `child_process::fuzz_rules` panics if
//! the run never ends, ends the wrong way, or signals a reaped process.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    child_process::fuzz_rules(data);
});
