//! AFL++ target: see `pyrite_fuzz::block`.

fn main() {
    afl::fuzz!(|data: &[u8]| pyrite_fuzz::block(data));
}
