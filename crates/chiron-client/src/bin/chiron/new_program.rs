//! `chiron new-program`: a provider's new program, a crate ready to build, from the template
//! the project tests (`programs/template`).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;

/// The template program's source, as the project builds and tests it.
const TEMPLATE_LIB: &str = include_str!("../../../../../programs/template/src/lib.rs");

#[derive(Args)]
pub struct NewProgramArgs {
    /// The program's crate name (letters, digits, `-` and `_`; a letter first).
    name: String,
    /// The Chiron SDK crate to build against: `programs/sdk` in the Chiron source.
    #[arg(long, value_name = "PATH")]
    sdk: PathBuf,
    /// The folder to create the crate in (default: the current one). The crate is the
    /// subfolder named after the program, which must not exist yet.
    #[arg(long, default_value = ".")]
    dir: PathBuf,
}

/// Creates the crate; prints its folder and the commands that build, check and run it.
pub fn new_program(args: NewProgramArgs) -> anyhow::Result<()> {
    let name = &args.name;
    let valid = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !valid {
        bail!(
            "`{name}` cannot name a crate: use letters, digits, `-` and `_`, starting with a \
             letter"
        );
    }
    let sdk = args.sdk.canonicalize().with_context(|| {
        format!(
            "--sdk {}: no such folder (give `programs/sdk` of the Chiron source)",
            args.sdk.display()
        )
    })?;
    if !sdk.join("Cargo.toml").is_file() || !sdk.join("src/guide.rs").is_file() {
        bail!(
            "--sdk {}: not the Chiron SDK (give `programs/sdk` of the Chiron source)",
            sdk.display()
        );
    }
    let root = args.dir.join(name);
    // Never over someone's work: the folder must be new.
    std::fs::create_dir(&root).with_context(|| {
        format!(
            "cannot create {} (an existing folder is never written into)",
            root.display()
        )
    })?;
    std::fs::create_dir(root.join("src"))
        .with_context(|| format!("cannot create {}", root.join("src").display()))?;
    let write = |relative: &str, text: &str| -> anyhow::Result<()> {
        let path = root.join(relative);
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))
    };
    write("Cargo.toml", &cargo_toml(name, &sdk))?;
    write("src/lib.rs", TEMPLATE_LIB)?;
    write(".gitignore", "/target\n")?;
    let wasm = format!(
        "target/wasm32-unknown-unknown/release/{}.wasm",
        name.replace('-', "_")
    );
    write("README.md", &readme(name, &wasm))?;
    println!("{}", root.display());
    eprintln!(
        "created {name}: build it with `cargo build --release --target wasm32-unknown-unknown` \
         in {}, then `chiron check {wasm}`; see its README.md",
        root.display()
    );
    Ok(())
}

fn cargo_toml(name: &str, sdk: &Path) -> String {
    format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

# Not part of any enclosing workspace: the program builds on its own.
[workspace]

[lib]
# `cdylib`: the .wasm the sandbox runs; `rlib`: native runs of the same code.
crate-type = ["cdylib", "rlib"]

[dependencies]
chiron-sdk = {{ path = {sdk:?} }}

[profile.release]
opt-level = 3
lto = true
codegen-units = 1
panic = "abort"
"#,
        sdk = sdk.display().to_string()
    )
}

fn readme(name: &str, wasm: &str) -> String {
    format!(
        r#"# {name}

A Chiron provider program, started from the project's template. The SDK's guide
(`cargo doc --open`, then `chiron_sdk::guide`) explains each step.

```sh
rustup target add wasm32-unknown-unknown          # once
cargo build --release --target wasm32-unknown-unknown
chiron check {wasm}
chiron run-local {wasm} --csv my-table.csv --label-column class --epochs 2
chiron register --host http://HOST:7700 --token PROVIDER_TOKEN {wasm}
```
"#
    )
}
