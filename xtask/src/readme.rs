//! The README's two set-up-and-go commands, read from the README itself so that CI runs
//! exactly what a newcomer types and the two cannot drift apart.

use std::path::Path;

use anyhow::{bail, Context, Result};

/// The commands of the README's first `sh` block: the main job, then the tests.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ReadmeCommands {
    /// The first command (the main job).
    pub(crate) main_job: String,
    /// The second command (the test suite).
    pub(crate) tests: String,
}

/// Reads `README.md` in `root`.
pub(crate) fn read(root: &Path) -> Result<ReadmeCommands> {
    let path = root.join("README.md");
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    parse(&text).with_context(|| format!("in {}", path.display()))
}

/// The commands of the first ```` ```sh ```` block of `readme`, comments stripped; there
/// must be exactly two.
fn parse(readme: &str) -> Result<ReadmeCommands> {
    let mut lines = readme.lines().skip_while(|line| line.trim() != "```sh");
    if lines.next().is_none() {
        bail!("no ```sh block with the two set-up-and-go commands");
    }
    let commands: Vec<String> = lines
        .take_while(|line| !line.trim_start().starts_with("```"))
        .map(|line| line.split_once(" #").map_or(line, |(command, _comment)| command).trim().to_owned())
        .filter(|command| !command.is_empty() && !command.starts_with('#'))
        .collect();
    match <[String; 2]>::try_from(commands) {
        Ok([main_job, tests]) => Ok(ReadmeCommands { main_job, tests }),
        Err(commands) => {
            bail!("the first ```sh block has {} commands, not the two expected: {commands:?}", commands.len())
        }
    }
}

/// `command` with `extra` arguments for the program it runs: after its `--` when it has
/// one, else after a new `--` (as `cargo run` takes them).
pub(crate) fn with_program_args(command: &str, extra: &str) -> String {
    if command.split_whitespace().any(|word| word == "--") {
        format!("{command} {extra}")
    } else {
        format!("{command} -- {extra}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_sh_block_gives_the_two_commands_without_comments() {
        let readme = "# x\n\ntext\n\n```sh\ncargo run --release          # the main job\ncargo test --workspace       # the tests\n```\n\n```sh\nother\n```\n";
        let commands = parse(readme).unwrap();
        assert_eq!(commands.main_job, "cargo run --release");
        assert_eq!(commands.tests, "cargo test --workspace");
    }

    #[test]
    fn a_block_with_other_than_two_commands_is_refused() {
        let error = parse("```sh\ncargo run\n```\n").unwrap_err();
        assert!(format!("{error:#}").contains("1 commands"), "{error:#}");
        assert!(parse("no block here").is_err());
    }

    #[test]
    fn program_arguments_go_after_the_separator() {
        assert_eq!(
            with_program_args("cargo run --release", "--duration 3s"),
            "cargo run --release -- --duration 3s"
        );
        assert_eq!(
            with_program_args("cargo run -- torture", "--duration 3s"),
            "cargo run -- torture --duration 3s"
        );
    }

    #[test]
    fn this_workspace_readme_has_its_two_commands() {
        let commands = read(&crate::root()).unwrap();
        assert!(commands.main_job.starts_with("cargo run"), "{commands:?}");
        assert!(commands.tests.starts_with("cargo test"), "{commands:?}");
    }
}
