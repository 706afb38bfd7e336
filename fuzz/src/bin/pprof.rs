//! AFL++ target: see `pyrite_fuzz::pprof`.

fn main() {
    afl::fuzz!(|data: &[u8]| pyrite_fuzz::pprof(data));
}
