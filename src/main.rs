fn main() -> std::process::ExitCode {
    lowkey::cli::main()
}
