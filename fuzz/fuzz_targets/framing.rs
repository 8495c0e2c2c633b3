//! The IPC channel's framing over arbitrary bytes split at arbitrary points.
//!
//! Input layout: byte 0 picks the message-length limit, byte 1 the number of
//! cut points, the next bytes place the cuts; the rest is the stream.
//! `child_process::fuzz_framing` panics if the framer disagrees with a naive
//! model of Node's framing or holds more memory than its bound.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [limit, ncuts, rest @ ..] = data else { return };
    let max_len = [0, 1, 8, 64, 4096, 70_000, 1 << 20][*limit as usize % 7];
    let ncuts = (*ncuts as usize % 24).min(rest.len());
    let (cut_bytes, body) = rest.split_at(ncuts);
    let cuts: Vec<usize> = cut_bytes.iter().map(|&b| b as usize * body.len() / 255).collect();
    child_process::fuzz_framing(body, &cuts, max_len);
});
