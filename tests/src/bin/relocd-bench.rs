//! `cargo xtask bench`: relocd's benchmarks, each printed beside its reference.

fn main() {
    println!("no benchmarks yet");
}
