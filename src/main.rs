//! The `sv72` binary: parses the command line and dispatches to `sv72::cli`.

fn main() -> std::process::ExitCode {
    sv72::cli::main()
}
