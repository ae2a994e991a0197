//! Writes the man page and shell completions generated from the CLI definition:
//!
//!     cargo run --release --example gen-assets -- target/assets
//!
//! produces `lowkey.1` and `completions/{lowkey.bash,_lowkey,lowkey.fish}`; the packages
//! ship them (see `packaging/build.sh`).
//!
//! `lowkey.1` is the one manual page: the synopsis, commands and options come from
//! `cli::command()`, the exit codes and environment from its `--help` epilogue, and
//! CONFIGURATION, HTTP, OPERATION and FILES from the README's sections of those names,
//! so the page says what `--help` and the README say and never drifts from them.

use clap_complete::Shell;
use std::fmt::Write as _;
use std::path::PathBuf;

const README: &str = include_str!("../README.md");

fn main() -> std::io::Result<()> {
    let out = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "target/assets".into()),
    );
    let completions = out.join("completions");
    std::fs::create_dir_all(&completions)?;

    let cmd = lowkey::cli::command();
    std::fs::write(out.join("lowkey.1"), man_page(&cmd, README)?)?;

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

/// The whole page, in roff.
pub fn man_page(cmd: &clap::Command, readme: &str) -> std::io::Result<Vec<u8>> {
    let mut cmd = cmd.clone();
    cmd.build();
    let man = clap_mangen::Man::new(cmd.clone());
    let mut page = Vec::new();
    man.render_title(&mut page)?;
    man.render_name_section(&mut page)?;

    let mut roff = String::new();
    let leaves = leaf_commands(&cmd);
    roff.push_str(".SH SYNOPSIS\n");
    for (i, path) in leaves.iter().enumerate() {
        if i > 0 {
            roff.push_str(".br\n");
        }
        roff.push_str(&usage(path));
        roff.push('\n');
    }
    roff.push_str(".br\n\\fBlowkey\\fR \\fB\\-\\-help\\fR | \\fB\\-\\-version\\fR\n");

    roff.push_str(".SH DESCRIPTION\n");
    if let Some(about) = cmd.get_long_about().or_else(|| cmd.get_about()) {
        writeln!(roff, "{}.", inline(about.to_string().trim_end_matches('.'))).unwrap();
        roff.push_str(".PP\n");
    }
    roff.push_str(&markdown(first_paragraph(readme)));
    roff.push_str(
        ".PP\nThe system template units run one instance per box user; see \\fBSYSTEMD UNITS\\fR.\n",
    );

    roff.push_str(".SH COMMANDS\n");
    for path in &leaves {
        let leaf = path.last().expect("a path has its command");
        writeln!(roff, ".SS \"{}\"", usage(path).replace('"', "\\(dq")).unwrap();
        if let Some(text) = leaf.get_long_about().or_else(|| leaf.get_about()) {
            roff.push_str(&markdown(&text.to_string()));
        }
        for arg in leaf.get_arguments().filter(|a| !shown_elsewhere(a)) {
            roff.push_str(&option_item(arg));
        }
    }

    roff.push_str(".SH OPTIONS\nThese apply to every command.\n");
    for arg in cmd.get_arguments().filter(|a| !a.is_hide_set()) {
        roff.push_str(&option_item(arg));
    }

    roff.push_str(".SH CONFIGURATION\n");
    roff.push_str(&markdown(readme_section(readme, "Configure")));
    roff.push_str(".SH HTTP\n");
    roff.push_str(&markdown(readme_section(readme, "HTTP")));
    roff.push_str(SIGNALS);
    roff.push_str(UNITS);
    roff.push_str(".SH OPERATION\n");
    roff.push_str(&markdown(readme_section(readme, "Operate")));
    roff.push_str(".SH FILES\n");
    roff.push_str(&markdown(readme_section(readme, "Files")));
    roff.push_str(INSTALLED_FILES);

    let epilogue = cmd
        .get_after_help()
        .expect("lowkey --help ends with the exit codes and environment")
        .to_string();
    roff.push_str(".SH ENVIRONMENT\n");
    roff.push_str(&help_list(&epilogue, "Environment:"));
    roff.push_str(".SH \"EXIT STATUS\"\n");
    roff.push_str(&help_list(&epilogue, "Exit codes:"));
    roff.push_str(SEE_ALSO);

    page.extend_from_slice(roff.as_bytes());
    Ok(page)
}

const SIGNALS: &str = r#".SH SIGNALS
.TP
\fBSIGHUP\fR
Re-read the config. A valid config applies at once, on the same sockets, without
dropping a request; a broken one is logged at error priority, shown in the status
line, and the old config keeps serving. \fBsystemctl reload\fR sends it; outside
systemd, send it to the \fBlowkey serve\fR process with \fBkill \-HUP\fR \fIPID\fR.
.TP
\fBSIGTERM\fR, \fBSIGINT\fR
Stop in order: accept no new connection, give the requests in flight 10 s, then send
each running agent's process group SIGTERM and, 5 s later, SIGKILL. The events of
those runs run again at the next start, and lowkey exits 0.
"#;

const UNITS: &str = r#".SH "SYSTEMD UNITS"
.TP
\fBlowkey@.socket\fR, \fBlowkey@.service\fR
The system template: \fBsystemctl enable \-\-now lowkey@\fR\fIUSER\fR\fB.socket\fR
makes systemd listen on 127.0.0.1:7433 and start \fBlowkey serve\fR as \fIUSER\fR
on the first connection, with the state in \fIUSER\fR's \fI~/.lowkey\fR.
\fBsystemctl reload lowkey@\fR\fIUSER\fR re-reads the config;
\fBjournalctl \-u lowkey@\fR\fIUSER\fR shows its log. A second user needs another
port, set with \fBsystemctl edit lowkey@\fR\fIUSER\fR\fB.socket\fR.
.TP
\fBlowkey.socket\fR, \fBlowkey.service\fR
The same in a user's own service manager: \fBsystemctl \-\-user enable \-\-now
lowkey.socket\fR, and \fBloginctl enable\-linger\fR so it runs without a login
session. It listens on the same port as the system template: use one or the other.
.PP
The service is \fBType=notify\fR: lowkey reports readiness, reloads and its status
line to systemd, pings the watchdog (\fBWatchdogSec=30s\fR), and with
\fBidleExitSec\fR set exits when idle, to be started again by the socket. The units
sandbox lowkey and its agents (read-only system directories, no privileges, private
/tmp); each line of the sandbox is explained in the unit file, and
\fBsystemctl edit\fR loosens or tightens it per box.
"#;

const INSTALLED_FILES: &str = r#".PP
The packages install:
.TP
\fI/usr/lib/systemd/system/lowkey@.socket\fR, \fI/usr/lib/systemd/system/lowkey@.service\fR
The system template units.
.TP
\fI/usr/lib/systemd/user/lowkey.socket\fR, \fI/usr/lib/systemd/user/lowkey.service\fR
The user units.
.TP
\fI/usr/lib/systemd/catalog/lowkey.catalog\fR
The journal message catalog, for \fBjournalctl \-x\fR.
.TP
\fI/usr/share/doc/lowkey/examples/config.json\fR
An example config with a signed and an unsigned source.
"#;

const SEE_ALSO: &str = r#".SH "SEE ALSO"
.BR systemctl (1),
.BR journalctl (1),
.BR systemd.socket (5),
.BR systemd.service (5),
.BR systemd.exec (5)
"#;

/// Every runnable command as its path from the top: `[lowkey, sessions, show]`.
fn leaf_commands(cmd: &clap::Command) -> Vec<Vec<&clap::Command>> {
    let mut out = Vec::new();
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        let subs = leaf_commands(sub);
        if subs.is_empty() {
            out.push(vec![cmd, sub]);
        }
        for mut path in subs {
            path.insert(0, cmd);
            out.push(path);
        }
    }
    out
}

/// Help and version flags, listed once under OPTIONS and in the synopsis.
fn shown_elsewhere(arg: &clap::Arg) -> bool {
    arg.is_hide_set() || arg.is_global_set() || ["help", "version"].contains(&arg.get_id().as_str())
}

/// `lowkey [--config PATH] sessions show [--json] ID`: each command on the path with
/// its options and their arguments.
fn usage(path: &[&clap::Command]) -> String {
    let mut line = String::new();
    for (depth, cmd) in path.iter().enumerate() {
        if depth > 0 {
            line.push(' ');
        }
        write!(line, "\\fB{}\\fR", cmd.get_name()).unwrap();
        for arg in cmd.get_arguments().filter(|a| !a.is_positional()) {
            if shown_elsewhere(arg) && !(depth == 0 && arg.is_global_set()) {
                continue;
            }
            write!(line, " {}", bracketed(arg, &flag(arg))).unwrap();
        }
        for arg in cmd.get_positionals().filter(|a| !a.is_hide_set()) {
            write!(
                line,
                " {}",
                bracketed(arg, &format!("\\fI{}\\fR", value_name(arg)))
            )
            .unwrap();
        }
    }
    line
}

fn bracketed(arg: &clap::Arg, text: &str) -> String {
    if arg.is_required_set() {
        text.to_owned()
    } else {
        format!("[{text}]")
    }
}

/// `--listen ADDR`, `-h`, `--json`: the option as typed, with its argument.
fn flag(arg: &clap::Arg) -> String {
    let mut text = match (arg.get_long(), arg.get_short()) {
        (Some(long), _) => format!("\\fB\\-\\-{}\\fR", long.replace('-', "\\-")),
        (None, Some(short)) => format!("\\fB\\-{short}\\fR"),
        (None, None) => String::new(),
    };
    if arg.get_num_args().is_some_and(|n| n.takes_values()) {
        write!(text, " \\fI{}\\fR", value_name(arg)).unwrap();
    }
    text
}

fn value_name(arg: &clap::Arg) -> String {
    arg.get_value_names()
        .and_then(|names| names.first().map(|n| n.to_string()))
        .unwrap_or_else(|| arg.get_id().as_str().to_uppercase())
}

/// An option or argument as a tagged paragraph: how to write it, then its help.
fn option_item(arg: &clap::Arg) -> String {
    let tag = if arg.is_positional() {
        format!("\\fI{}\\fR", value_name(arg))
    } else {
        let mut tag = flag(arg);
        if let (Some(short), Some(_)) = (arg.get_short(), arg.get_long()) {
            tag = format!("\\fB\\-{short}\\fR, {tag}");
        }
        tag
    };
    let help = arg
        .get_long_help()
        .or_else(|| arg.get_help())
        .map(|h| h.to_string())
        .unwrap_or_default();
    // Inside a tagged paragraph, a new paragraph keeps the indent.
    let body = markdown(&help)
        .replacen(".PP\n", "", 1)
        .replace(".PP\n", ".IP\n");
    format!(".TP\n{tag}\n{body}")
}

/// The items under `header` in the `--help` epilogue: `  78  the config ...` lines
/// become tagged paragraphs.
fn help_list(epilogue: &str, header: &str) -> String {
    let mut roff = String::new();
    let items = epilogue
        .lines()
        .skip_while(|l| l.trim() != header)
        .skip(1)
        .take_while(|l| !l.trim().is_empty());
    for line in items {
        let (tag, text) = line.trim().split_once(' ').expect("`TAG  text` lines");
        write!(
            roff,
            ".TP\n\\fB{}\\fR\n{}\n",
            escape(tag),
            inline(text.trim())
        )
        .unwrap();
    }
    assert!(!roff.is_empty(), "`lowkey --help` has no {header:?} list");
    roff
}

/// The README's text under `## title`, up to the next heading of that level.
fn readme_section<'a>(readme: &'a str, title: &str) -> &'a str {
    let heading = format!("\n## {title}\n");
    let start = readme
        .find(&heading)
        .unwrap_or_else(|| panic!("README.md has no `## {title}` section"))
        + heading.len();
    let rest = &readme[start..];
    &rest[..rest.find("\n## ").unwrap_or(rest.len())]
}

/// The README's first paragraph after its title.
fn first_paragraph(readme: &str) -> &str {
    let body = readme.split_once("\n\n").map_or(readme, |(_, body)| body);
    body.split("\n\n").next().unwrap_or(body)
}

/// The markdown the README uses (`###` subsections, paragraphs, `-` lists, two-column
/// tables, fenced or indented code, inline code, bold and links) in roff.
fn markdown(text: &str) -> String {
    let mut roff = String::new();
    let mut lines = text.lines().peekable();
    let mut paragraph_open = false;
    while let Some(line) = lines.next() {
        if line.trim().is_empty() {
            paragraph_open = false;
        } else if let Some(title) = line.strip_prefix("### ") {
            writeln!(roff, ".SS {}", inline(title)).unwrap();
            paragraph_open = false;
        } else if line.starts_with("```") {
            roff.push_str(".PP\n.RS 4\n.nf\n");
            for code in lines.by_ref().take_while(|l| !l.starts_with("```")) {
                writeln!(roff, "{}", verbatim(code)).unwrap();
            }
            roff.push_str(".fi\n.RE\n");
            paragraph_open = false;
        } else if let Some(code) = line.strip_prefix("    ") {
            roff.push_str(".PP\n.RS 4\n.nf\n");
            writeln!(roff, "{}", verbatim(code)).unwrap();
            while let Some(code) = lines.next_if(|l| l.starts_with("    ")) {
                writeln!(roff, "{}", verbatim(&code[4..])).unwrap();
            }
            roff.push_str(".fi\n.RE\n");
            paragraph_open = false;
        } else if line.starts_with('|') {
            let cells = table_cells(line);
            let separator = cells
                .iter()
                .all(|c| c.chars().all(|ch| ch == '-' || ch == ':'));
            // The header row names the columns, which the tagged list does not need.
            let header = !paragraph_open;
            if !separator && !header {
                write!(
                    roff,
                    ".TP\n{}\n{}\n",
                    inline(cells[0]),
                    inline(cells[1..].join(" ").trim())
                )
                .unwrap();
            }
            paragraph_open = true;
        } else {
            // Inline code may wrap onto the next line: a paragraph or list item is
            // converted as one line of text.
            let mut text = line.trim_start().to_owned();
            while let Some(more) = lines.next_if(|l| continues(l)) {
                text.push(' ');
                text.push_str(more.trim());
            }
            match text.strip_prefix("- ") {
                Some(item) => writeln!(roff, ".IP \\(bu 2\n{}", inline(item)).unwrap(),
                None => writeln!(roff, ".PP\n{}", inline(&text)).unwrap(),
            }
            paragraph_open = true;
        }
    }
    roff
}

/// Whether a line goes on with the paragraph or list item above it.
fn continues(line: &str) -> bool {
    let text = line.trim_start();
    !text.is_empty()
        && !line.starts_with("    ")
        && !["- ", "|", "```", "### "]
            .iter()
            .any(|p| text.starts_with(p))
}

/// `| a | b |` into its cells; a `|` inside backticks is text.
fn table_cells(line: &str) -> Vec<&str> {
    let inner = line.trim().trim_start_matches('|').trim_end_matches('|');
    let mut cells = Vec::new();
    let (mut start, mut in_code) = (0, false);
    for (i, ch) in inner.char_indices() {
        match ch {
            '`' => in_code = !in_code,
            '|' if !in_code => {
                cells.push(inner[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    cells.push(inner[start..].trim());
    cells
}

/// One line of markdown text in roff: `code` and **bold** in bold, links as their text.
fn inline(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    let mut bold = false;
    while let Some(ch) = rest.chars().next() {
        if ch == '`' {
            if let Some(end) = rest[1..].find('`') {
                write!(out, "\\fB{}\\fR", escape(&rest[1..=end])).unwrap();
                if bold {
                    out.push_str("\\fB");
                }
                rest = &rest[end + 2..];
                continue;
            }
        } else if rest.starts_with("**") {
            bold = !bold;
            out.push_str(if bold { "\\fB" } else { "\\fR" });
            rest = &rest[2..];
            continue;
        } else if ch == '[' {
            if let Some((label, after)) = rest[1..].split_once("](") {
                if let Some(end) = after.find(')') {
                    out.push_str(&label.replace('\\', "\\e"));
                    rest = &after[end + 1..];
                    continue;
                }
            }
        }
        if ch == '\\' {
            out.push_str("\\e");
        } else {
            out.push(ch);
        }
        rest = &rest[ch.len_utf8()..];
    }
    if out.starts_with('.') || out.starts_with('\'') {
        out.insert_str(0, "\\&");
    }
    out
}

/// A line of a code block: shown as it is.
fn verbatim(line: &str) -> String {
    let out = escape(line);
    if out.starts_with('.') || out.starts_with('\'') {
        format!("\\&{out}")
    } else {
        out
    }
}

/// Text with roff's escape character and minus signs made literal.
fn escape(text: &str) -> String {
    text.replace('\\', "\\e").replace('-', "\\-")
}
