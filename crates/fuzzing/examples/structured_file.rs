//! Writes the GGUF file the `gguf_structured` fuzz target builds from an input, to inspect it:
//! `cargo run -p edgellm-fuzzing --example structured_file -- INPUT OUT.gguf`.

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, input, out] = &args[..] else {
        eprintln!("usage: structured_file INPUT OUT.gguf");
        std::process::exit(2);
    };
    let data = std::fs::read(input).unwrap_or_else(|e| panic!("{input}: {e}"));
    match edgellm_fuzzing::structured_file(&data) {
        Some(bytes) => std::fs::write(out, bytes).unwrap_or_else(|e| panic!("{out}: {e}")),
        None => {
            eprintln!("{input} does not describe a file the writer accepts");
            std::process::exit(1);
        }
    }
}
