//! Writes the man page and shell completions generated from the CLI definition:
//!
//!     cargo run --release --example gen-assets -- target/assets
//!
//! produces `lowkey.1` and `completions/{lowkey.bash,_lowkey,lowkey.fish}`; the packages
//! ship them (see `packaging/build.sh`).

use clap_complete::Shell;
use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let out = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "target/assets".into()),
    );
    let completions = out.join("completions");
    std::fs::create_dir_all(&completions)?;

    let cmd = lowkey::cli::command();
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd.clone()).render(&mut page)?;
    // One page covers the subcommands: each gets its own section after the main one.
    for sub in cmd.get_subcommands() {
        render_section(&mut page, &format!("lowkey {}", sub.get_name()), sub)?;
    }
    std::fs::write(out.join("lowkey.1"), page)?;

    for (shell, name) in [
        (Shell::Bash, "lowkey.bash"),
        (Shell::Zsh, "_lowkey"),
        (Shell::Fish, "lowkey.fish"),
    ] {
        let mut buf = Vec::new();
        clap_complete::generate(shell, &mut cmd.clone(), "lowkey", &mut buf);
        std::fs::write(completions.join(name), buf)?;
    }
    println!("wrote {}", out.display());
    Ok(())
}

/// Appends a subcommand's usage, description and options (recursing into its own
/// subcommands) as a section of the one man page.
fn render_section(page: &mut Vec<u8>, title: &str, cmd: &clap::Command) -> std::io::Result<()> {
    let man = clap_mangen::Man::new(cmd.clone().bin_name(title.to_owned()));
    page.extend_from_slice(format!(".SH \"{}\"\n", title.to_uppercase()).as_bytes());
    man.render_synopsis_section(page)?;
    man.render_description_section(page)?;
    man.render_options_section(page)?;
    for sub in cmd.get_subcommands() {
        render_section(page, &format!("{title} {}", sub.get_name()), sub)?;
    }
    Ok(())
}
