//! The benchmark's stages, each on a fresh database.

pub mod filing;
pub mod machine;
pub mod queue;
pub mod raw;
pub mod reference;
pub mod release;
