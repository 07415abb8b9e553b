//! `sqlx::migrate!` reads `migrations/` while compiling: a migration added
//! or edited must rebuild the crate, or the binary would carry the old set.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
