//! The `numaslab` command. See `numaslab --help`; each subcommand lives in its own module
//! under `cli/`.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
