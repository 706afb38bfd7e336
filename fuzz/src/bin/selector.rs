//! AFL++ target: see `pyrite_fuzz::selector`.

fn main() {
    afl::fuzz!(|data: &[u8]| pyrite_fuzz::selector(data));
}
