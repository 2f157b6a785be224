//! Writes the seed inputs of every fuzz target into `<dir>/<target>/seed-<n>`.
//!
//! Usage: `chiron-fuzz-seedgen <corpus dir>`. The seeds come from `chiron-fuzzing`'s
//! generators (`Target::seeds`), which build them from the crates' real types, the same ones
//! the smoke test (`cargo test -p chiron-fuzzing`) runs.

use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let Some(dir) = std::env::args().nth(1) else {
        eprintln!("usage: chiron-fuzz-seedgen <corpus dir>");
        return ExitCode::from(2);
    };
    for target in chiron_fuzzing::TARGETS {
        let out = Path::new(&dir).join(target.name);
        let seeds = (target.seeds)();
        let written = std::fs::create_dir_all(&out).and_then(|()| {
            seeds
                .iter()
                .enumerate()
                .try_for_each(|(i, seed)| std::fs::write(out.join(format!("seed-{i:02}")), seed))
        });
        if let Err(e) = written {
            eprintln!("chiron-fuzz-seedgen: {}: {e}", out.display());
            return ExitCode::FAILURE;
        }
        println!("   {}: {} seeds", target.name, seeds.len());
    }
    ExitCode::SUCCESS
}
