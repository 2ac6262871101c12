//! Carrier adapters.
