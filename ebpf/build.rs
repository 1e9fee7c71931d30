//! Rebuild the kernel programs when the linker changes: a new bpf-linker can change the
//! object without any source change.
use which::which;

fn main() {
    match which("bpf-linker") {
        Ok(linker) => println!("cargo:rerun-if-changed={}", linker.display()),
        Err(err) => println!("cargo:warning=bpf-linker not found ({err}); run ./x to install it"),
    }
}
