fn main() {
    // On macOS a cdylib that leaves the Python symbols undefined needs
    // `-undefined dynamic_lookup`, or `cargo build`/`clippy` of the workspace fails
    // to link it; maturin passes it itself, plain cargo does not.
    pyo3_build_config::add_extension_module_link_args();
}
