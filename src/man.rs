//! `xlb man --out DIR`: the man pages xlb(8) and xlb-ctl(8), generated from the command
//! line's own definition (clap_mangen), so they say what `--help` says and cannot drift
//! from it. xlb(8) holds every visible subcommand's options in a section of its own (there
//! are no xlb-run(8) pages to refer to); xlb-ctl(8) adds ipvsadm's verbs as `xlb ctl -h`
//! lists them. xlb.toml(5) is written by hand (packaging/xlb.toml.5). Hidden subcommands
//! (`corpus`, `man`) stay out of the pages. No date in `.TH`: the pages are reproducible.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use clap_mangen::Man;
use clap_mangen::roff::{Roff, bold, roman};

const MANUAL: &str = "System Administration";

/// Writes `xlb.8` and `xlb-ctl.8` for `cli` into `dir`.
pub fn write_pages(cli: clap::Command, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut cli = cli.disable_help_subcommand(true);
    cli.build();
    for (name, page) in [("xlb.8", xlb_page(&cli)?), ("xlb-ctl.8", ctl_page(&cli)?)] {
        let path = dir.join(name);
        std::fs::write(&path, page).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn page(cmd: clap::Command) -> Man {
    Man::new(cmd).section("8").manual(MANUAL).source(format!("xlb {}", env!("CARGO_PKG_VERSION")))
}

/// The head of a page: title, NAME, SYNOPSIS, DESCRIPTION, OPTIONS.
fn head(man: &Man, out: &mut Vec<u8>) -> std::io::Result<()> {
    man.render_title(out)?;
    man.render_name_section(out)?;
    man.render_synopsis_section(out)?;
    man.render_description_section(out)?;
    man.render_options_section(out)
}

fn xlb_page(cli: &clap::Command) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    head(&page(cli.clone()), &mut out)?;
    out.extend(Roff::new().control("SH", ["COMMANDS"]).render().into_bytes());
    for sub in cli.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("xlb {}", sub.get_name());
        let mut roff = Roff::new();
        roff.control("SS", [name.as_str()]);
        if let Some(about) = sub.get_long_about().or(sub.get_about()) {
            roff.text([roman(about.to_string())]);
        }
        out.extend(roff.render().into_bytes());
        // The subcommand's options, under its own heading rather than a second OPTIONS.
        let mut options = Vec::new();
        page(sub.clone()).render_options_section(&mut options)?;
        let options = String::from_utf8(options)?;
        let body: Vec<&str> = options.lines().filter(|l| *l != ".SH OPTIONS").collect();
        out.extend(format!("{}\n", body.join("\n")).into_bytes());
    }
    tail(&mut out, &[("xlb-ctl", "8"), ("xlb.toml", "5"), ("ipvsadm", "8")])?;
    Ok(out)
}

fn ctl_page(cli: &clap::Command) -> anyhow::Result<Vec<u8>> {
    let ctl = cli.find_subcommand("ctl").context("no ctl subcommand")?.clone();
    let long_about = ctl.get_about().map(|a| a.to_string()).unwrap_or_default();
    let ctl = ctl
        .name("xlb-ctl")
        .bin_name("xlb ctl")
        .display_name("xlb-ctl")
        .about("send ipvsadm commands to a running xlb")
        .long_about(long_about);
    let mut out = Vec::new();
    head(&page(ctl), &mut out)?;
    let mut roff = Roff::new();
    roff.control("SH", ["COMMANDS"]);
    roff.text([roman("The ipvsadm commands "), bold("xlb ctl"), roman(" sends to a running xlb:")]);
    roff.control("PP", []).control("nf", []);
    for line in xlb::control::ipvsadm::HELP.lines().skip(1) {
        roff.text([roman(line)]);
    }
    roff.control("fi", []);
    out.extend(roff.render().into_bytes());
    tail(&mut out, &[("xlb", "8"), ("xlb.toml", "5"), ("ipvsadm", "8")])?;
    Ok(out)
}

/// FILES and SEE ALSO.
fn tail(out: &mut Vec<u8>, see_also: &[(&str, &str)]) -> std::io::Result<()> {
    let mut roff = Roff::new();
    roff.control("SH", ["FILES"]);
    roff.control("TP", []).text([bold("/etc/xlb/xlb.toml")]);
    roff.text([roman("The config the packaged unit runs (see xlb.toml(5)).")]);
    roff.control("TP", []).text([bold(xlb::control::socket::DEFAULT_SOCKET)]);
    roff.text([roman("The control socket xlb ctl talks to (root only).")]);
    roff.control("SH", ["SEE ALSO"]);
    let refs: Vec<String> = see_also.iter().map(|(n, s)| format!("{n}({s})")).collect();
    roff.text([roman(refs.join(", "))]);
    out.write_all(roff.render().as_bytes())
}
