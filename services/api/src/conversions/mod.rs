//! Proto <-> domain conversions. Everything coming in is validated here; field paths in errors are the proto's.

pub mod account;
pub mod change;
pub mod change_input;
pub mod change_lists;
pub mod inventory;
pub mod timestamp;
