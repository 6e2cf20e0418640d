//! `sqlx::migrate!` embeds the migrations folder when this crate compiles; on stable Rust it cannot tell cargo
//! to watch the folder, so a new migration file would not rebuild the crate without this.
fn main() {
    println!("cargo:rerun-if-changed=../../migrations");
}
