//! AFL++ target: see `pyrite_fuzz::otlp`.

fn main() {
    afl::fuzz!(|data: &[u8]| pyrite_fuzz::otlp(data));
}
