//! Every config file the project ships is one `lowkey check` accepts.

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
        "warning: webhooks.forms.secret:",
    ] {
        assert!(out.stdout.contains(key), "{key}: {}", out.stdout);
    }

    home.write_config_text(&example.replace("replace_me", "filled_in"));
    let out = home.run(&["check"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.contains("ok (4 sources, 2 agents"),
        "{}",
        out.stdout
    );
}
