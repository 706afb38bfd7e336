//! AFL++ target: see `pyrite_fuzz::folded`.

fn main() {
    afl::fuzz!(|data: &[u8]| pyrite_fuzz::folded(data));
}
