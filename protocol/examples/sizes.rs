//! Prints `<case> <bytes>` for the sealed size of every size case (SPEC.md §8).
//! `cargo run -q -p protocol --example sizes`

#[path = "../tests/common/mod.rs"]
mod common;

fn main() {
    for (name, readings) in common::size_cases() {
        println!("{name} {}", common::sealed_len(&readings));
    }
}
