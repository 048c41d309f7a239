fn main() {
    eprintln!(
        "mcp-gateway: the proxy is not built yet (issue 3); run `cargo run --example stack_layers` to see the layers"
    );
    std::process::exit(2);
}
