//! What the packages ship: every config file is one `lowkey check` accepts, and the man
//! page is complete and refers only to pages that exist.

use crate::support::*;

#[test]
fn the_example_config_in_the_packages_passes_check() {
    let home = Home::new();
    let you = home.dir.path().join("you");
    for dir in [
        "projects/billing",
        "projects/website",
        "projects/ops",
        "bin",
    ] {
        std::fs::create_dir_all(you.join(dir)).unwrap();
    }
    // The onFinish POST's secret, in a file of the user's as the example has it.
    std::fs::create_dir_all(you.join(".config/lowkey")).unwrap();
    let secret = you.join(".config/lowkey/onfinish.secret");
    std::fs::write(&secret, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n").unwrap();
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let agent = you.join("bin/triage-agent");
    std::fs::write(&agent, "#!/bin/sh\ncat\n").unwrap();
    std::fs::set_permissions(&agent, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/packaging/config.example.json"
    ))
    .unwrap();
    assert!(
        example.contains("/home/you/"),
        "the example uses /home/you as its home"
    );
    let example = example.replace("/home/you", you.to_str().unwrap());

    // As shipped, its key and secrets are placeholders: `check` refuses the key, and
    // the secrets of the sources that take the signature alone.
    home.write_config_text(&example);
    let out = home.run(&["check"]);
    assert_eq!(out.code, 78, "{out:?}");
    for key in [
        "error: apiKey:",
        "error: webhooks.stripe.secret:",
        "error: webhooks.github.secrets[0]:",
        "error: webhooks.github.secrets[1]:",
        "error: webhooks.sms.secret:",
        "error: webhooks.shop.secret:",
        "warning: webhooks.forms.secret:",
    ] {
        assert!(out.stdout.contains(key), "{key}: {}", out.stdout);
    }

    home.write_config_text(&example.replace("replace_me", "filled_in"));
    let out = home.run(&["check"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.contains("ok (6 sources, 2 agents"),
        "{}",
        out.stdout
    );
}

/// The page the packages install, generated exactly as `packaging/build.sh` does.
#[allow(dead_code)]
#[path = "../../examples/gen-assets.rs"]
mod gen_assets;

/// `man -l` over the generated page: the text a user reads, and groff's warnings.
fn rendered_man_page() -> (String, String) {
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("lowkey.1");
    let roff =
        gen_assets::man_page(&lowkey::cli::command(), include_str!("../../README.md")).unwrap();
    std::fs::write(&page, roff).unwrap();
    let out = std::process::Command::new("man")
        .args(["--warnings", "-l"])
        .arg(&page)
        .env("MANWIDTH", "200")
        .env("MANPAGER", "cat")
        .env("LANG", "C.UTF-8")
        .output()
        .expect("man-db's man runs (tests/setup installs man-db)");
    assert!(out.status.success(), "{out:?}");
    (
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// The section named `title` of a rendered page: its lines up to the next heading.
fn man_section<'a>(text: &'a str, title: &str) -> &'a str {
    let start = text
        .find(&format!("\n{title}\n"))
        .unwrap_or_else(|| panic!("the man page has no {title} section:\n{text}"))
        + title.len()
        + 2;
    let rest = &text[start..];
    let end = rest
        .find(|c: char| c.is_ascii_uppercase())
        .filter(|&i| rest[..i].ends_with('\n'))
        .unwrap_or(rest.len());
    &rest[..end]
}

#[test]
fn the_man_page_has_every_section_an_operator_looks_for() {
    let (text, warnings) = rendered_man_page();
    assert_eq!(warnings, "", "groff warns about the page");
    for title in [
        "NAME",
        "SYNOPSIS",
        "DESCRIPTION",
        "COMMANDS",
        "OPTIONS",
        "CONFIGURATION",
        "HTTP",
        "SIGNALS",
        "SYSTEMD UNITS",
        "OPERATION",
        "FILES",
        "ENVIRONMENT",
        "EXIT STATUS",
        "SEE ALSO",
    ] {
        assert!(
            !man_section(&text, title).trim().is_empty(),
            "{title} is empty"
        );
    }
    assert!(man_section(&text, "CONFIGURATION").contains("webhooks.<source>.verify"));
    // The README's `###` subsections are the page's subsections.
    assert!(man_section(&text, "CONFIGURATION").contains("\n   Filters\n"));
    assert!(man_section(&text, "HTTP").contains("WWW-Authenticate: Bearer"));
    assert!(man_section(&text, "SIGNALS").contains("SIGHUP"));
    assert!(man_section(&text, "SYSTEMD UNITS").contains("lowkey@USER.socket"));
    assert!(man_section(&text, "FILES").contains("~/.lowkey/config.json"));
    assert!(man_section(&text, "ENVIRONMENT").contains("LOWKEY_HOME"));
}

#[test]
fn the_man_page_synopsis_shows_every_command_with_its_options_and_arguments() {
    let (text, _) = rendered_man_page();
    let synopsis = man_section(&text, "SYNOPSIS");
    let top = lowkey::cli::command();
    let mut commands = vec![(vec!["lowkey".to_owned()], top.clone())];
    while let Some((path, cmd)) = commands.pop() {
        if cmd.has_subcommands() {
            for sub in cmd.get_subcommands() {
                let mut path = path.clone();
                path.push(sub.get_name().to_owned());
                commands.push((path, sub.clone()));
            }
            continue;
        }
        let words = format!(" {} ", path[1..].join(" "));
        let line = synopsis
            .lines()
            .find(|l| l.contains(&words) || l.trim_end().ends_with(words.trim_end()))
            .unwrap_or_else(|| panic!("no synopsis line for{words}in\n{synopsis}"));
        for arg in cmd.get_arguments() {
            let name = arg
                .get_value_names()
                .and_then(|v| v.first().map(|s| s.to_string()))
                .unwrap_or_else(|| arg.get_id().as_str().to_uppercase());
            let shown = match arg.get_long() {
                Some("help" | "version") => continue,
                Some(long) if arg.get_num_args().is_some_and(|n| n.takes_values()) => {
                    format!("--{long} {name}")
                }
                Some(long) => format!("--{long}"),
                None => name,
            };
            assert!(line.contains(&shown), "{shown} missing from {line:?}");
        }
        assert!(line.contains("[--config PATH]"), "{line:?}");
    }
}

#[test]
fn the_man_page_lists_every_exit_code_and_refers_only_to_pages_that_exist() {
    let (text, _) = rendered_man_page();
    let status = man_section(&text, "EXIT STATUS");
    use lowkey::cli::exit;
    for code in [
        exit::OK,
        exit::FAILURE,
        exit::USAGE,
        exit::NO_INPUT,
        exit::UNAVAILABLE,
        exit::CANT_CREATE,
        exit::IO,
        exit::CONFIG,
    ] {
        assert!(
            status
                .lines()
                .any(|l| l.trim_start().starts_with(&format!("{code} "))),
            "exit code {code} is not in EXIT STATUS:\n{status}"
        );
    }
    // Every `name(N)` must be this page or one man can open here (systemd's pages).
    let mut references = Vec::new();
    for (i, _) in text.match_indices('(') {
        let name_start = text[..i]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || "._@-".contains(c)))
            .map_or(0, |s| s + 1);
        let name = &text[name_start..i];
        let section = text[i + 1..].split(')').next().unwrap_or("");
        if !name.is_empty() && section.len() == 1 && section.chars().all(|c| c.is_ascii_digit()) {
            references.push((name.to_owned(), section.to_owned()));
        }
    }
    assert!(
        references.iter().any(|(n, _)| n == "systemctl"),
        "{references:?}"
    );
    for (name, section) in references {
        if name == "lowkey" {
            assert_eq!(section, "1");
            continue;
        }
        assert!(
            !name.starts_with("lowkey"),
            "the page refers to {name}({section}), which is not shipped"
        );
        let found = std::process::Command::new("man")
            .args(["-w", &section, &name])
            .output()
            .unwrap();
        assert!(
            found.status.success(),
            "{name}({section}) has no manual page here"
        );
    }
}
