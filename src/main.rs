//! The `pyrite` binary: a thin shell over [`pyrite::cli`].

fn main() -> anyhow::Result<()> {
    pyrite::cli::main()
}
