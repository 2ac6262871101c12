//! Customer API handlers: extract, call one store operation, render.

pub mod agents;
pub mod numbers;
pub mod requests;
