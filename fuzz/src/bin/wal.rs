//! AFL++ target: see `pyrite_fuzz::wal`.

fn main() {
    afl::fuzz!(|data: &[u8]| pyrite_fuzz::wal(data));
}
